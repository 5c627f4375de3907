"""Image inputs: base64, data URIs, uploads and (opt-in) URLs → checked, decoded RGB images.

Every check that can fail on a client's bytes happens here, before the image is queued, so a
bad image is a 4xx for its own request and never fails a batch shared with other clients.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import re
import socket
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
from PIL import Image

from polyclip.encoders.base import load_image
from polyclip.service.config import Limits
from polyclip.service.domain import BadInput, TooLarge

_DATA_URI = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def _too_large(size: int, limits: Limits, field: str) -> TooLarge:
    return TooLarge(
        "image_too_large",
        f"image is {size} bytes, over the limit of {limits.max_image_bytes}",
        field=field,
    )


def decode_base64(ref: str, limits: Limits, field: str) -> bytes:
    """Raw base64 or a ``data:image/...;base64,`` URI; size checked before decoding."""
    payload = _WHITESPACE.sub("", _DATA_URI.sub("", ref, count=1))
    if len(payload) * 3 // 4 > limits.max_image_bytes:
        raise _too_large(len(payload) * 3 // 4, limits, field)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadInput("invalid_base64", f"image is not valid base64: {e}", field=field) from e
    if not data:
        raise BadInput("invalid_image", "image is empty", field=field)
    return data


async def fetch_url(url: str, limits: Limits, field: str) -> bytes:
    """Download an image when URLs are enabled, within one deadline for the whole fetch.

    The host is resolved once, every address it has must be public (IPv6 forms that embed an
    IPv4 address are judged by that address), and the connection goes to the address that was
    checked, so a second DNS answer cannot point it elsewhere. Refusals say only that the
    address is not allowed, never what a name resolved to.
    """
    if not limits.allow_image_urls:
        raise BadInput(
            "image_urls_disabled",
            "fetching image URLs is disabled on this server; send base64 or upload the file",
            field=field,
        )
    try:
        async with asyncio.timeout(limits.url_timeout_s):
            return await _fetch(url, limits, field)
    except TimeoutError as e:
        raise BadInput(
            "image_fetch_failed",
            f"the image did not download within {limits.url_timeout_s} s",
            field=field,
        ) from e


async def _fetch(url: str, limits: Limits, field: str) -> bytes:
    parts, ip = await resolve_public(url, field)
    host = parts.hostname or ""
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    hostport = parts.netloc.rpartition("@")[2]  # never send userinfo on as part of Host
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        async with (
            httpx.AsyncClient(follow_redirects=False, trust_env=False) as client,
            client.stream("GET", pinned, headers={"Host": hostport}, extensions=extensions) as r,
        ):
            if r.status_code != 200:
                raise BadInput(
                    "image_fetch_failed", f"the image URL answered {r.status_code}", field=field
                )
            data = bytearray()
            async for chunk in r.aiter_bytes():
                data += chunk
                if len(data) > limits.max_image_bytes:
                    raise _too_large(len(data), limits, field)
            return bytes(data)
    except httpx.HTTPError as e:
        raise BadInput(
            "image_fetch_failed", f"cannot fetch the image ({type(e).__name__})", field=field
        ) from e


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries: mapped, 6to4, Teredo, NAT64 or IPv4-compatible."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # 64:ff9b::/96 and ::/96
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast, judged by the embedded IPv4 address where there is one."""
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        return is_public(inner)
    return ip.is_global and not ip.is_multicast


async def resolve_public(
    url: str, field: str
) -> tuple[SplitResult, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The URL's parts and a checked public address to connect to; refusals say why, briefly."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port out of range or not a number
        host = parts.hostname
    except ValueError as e:
        raise BadInput("invalid_url", "the image URL is malformed", field=field) from e
    if parts.scheme not in ("http", "https") or not host:
        raise BadInput("invalid_url", "image URLs must be http(s) with a host", field=field)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    except (OSError, UnicodeError, ValueError) as e:
        raise BadInput("invalid_url", "the image URL's host cannot be resolved", field=field) from e
    if not addresses or not all(is_public(ip) for ip in addresses):
        raise BadInput("forbidden_address", "the image URL's host is not allowed", field=field)
    return parts, addresses[0]


async def image_bytes(ref: str, limits: Limits, field: str) -> bytes:
    if ref.startswith(("http://", "https://")):
        return await fetch_url(ref, limits, field)
    return decode_base64(ref, limits, field)


def open_header(data: bytes, limits: Limits, field: str) -> Image.Image:
    """Read only the header: the format and the size, refusing oversized files."""
    if len(data) > limits.max_image_bytes:
        raise _too_large(len(data), limits, field)
    try:
        img = Image.open(io.BytesIO(data))  # lazy: the pixels are not decoded yet
    except Image.DecompressionBombError as e:
        raise TooLarge("image_too_large", "image has too many pixels", field=field) from e
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... on junk
        raise BadInput(
            "invalid_image", "input is not a readable image (PNG, JPEG, WebP, ...)", field=field
        ) from e
    if img.width * img.height > limits.max_image_pixels:
        raise TooLarge(
            "image_too_large",
            f"image has {img.width}x{img.height} pixels, over the limit of "
            f"{limits.max_image_pixels}",
            field=field,
        )
    return img


def decode(img: Image.Image, field: str) -> Image.Image:
    try:
        return load_image(img)  # full decode + RGB, off the event loop (see load_images)
    except Exception as e:  # truncated or corrupt pixel data: the client's image, a 4xx
        raise BadInput("invalid_image", "image could not be decoded", field=field) from e


async def load_images(
    inputs: list[str | bytes], limits: Limits, fields: list[str]
) -> list[Image.Image]:
    """Fetch and decode every input (strings: base64, data URI or URL; bytes: an upload).

    All headers are read first, and the request's pixels counted against
    ``max_request_pixels``, so no image is decoded for a request that is over its budget.
    """
    raw = [
        ref if isinstance(ref, bytes) else await image_bytes(ref, limits, field)
        for ref, field in zip(inputs, fields, strict=True)
    ]

    def decode_all() -> list[Image.Image]:
        headers = [open_header(d, limits, f) for d, f in zip(raw, fields, strict=True)]
        pixels = sum(img.width * img.height for img in headers)
        if pixels > limits.max_request_pixels:
            raise TooLarge(
                "images_too_large",
                f"the images of this request have {pixels} pixels in all, over the limit of "
                f"{limits.max_request_pixels}",
                field=fields[0].split("[")[0] if len(fields) > 1 else fields[0],
            )
        return [decode(img, f) for img, f in zip(headers, fields, strict=True)]

    return await asyncio.to_thread(decode_all)
