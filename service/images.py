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
from urllib.parse import urlsplit

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
    """Download an image when URLs are enabled; private and loopback hosts are refused."""
    if not limits.allow_image_urls:
        raise BadInput(
            "image_urls_disabled",
            "fetching image URLs is disabled on this server; send base64 or upload the file",
            field=field,
        )
    await check_public_url(url, field)
    try:
        async with (
            httpx.AsyncClient(follow_redirects=False, timeout=limits.url_timeout_s) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise BadInput(
                    "image_fetch_failed", f"{url} answered {response.status_code}", field=field
                )
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limits.max_image_bytes:
                    raise _too_large(len(data), limits, field)
            return bytes(data)
    except httpx.HTTPError as e:
        raise BadInput("image_fetch_failed", f"cannot fetch {url}: {e}", field=field) from e


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_public_url(url: str, field: str) -> None:
    """Refuse URLs that are not http(s) or resolve to a private, loopback or link-local address.

    Every address the name resolves to must be public, so a name with one private record is
    refused. Redirects are not followed by the fetcher, so they cannot bypass this check.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput("invalid_url", "image URLs must be http(s) with a host", field=field)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError) as e:
        msg = f"cannot resolve {parts.hostname}: {e}"
        raise BadInput("invalid_url", msg, field=field) from e
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not _is_public(ip):
            raise BadInput(
                "forbidden_address",
                f"{parts.hostname} resolves to {ip}, a private or loopback address",
                field=field,
            )


async def image_bytes(ref: str, limits: Limits, field: str) -> bytes:
    if ref.startswith(("http://", "https://")):
        return await fetch_url(ref, limits, field)
    return decode_base64(ref, limits, field)


def open_image(data: bytes, limits: Limits, field: str) -> Image.Image:
    """Decode to RGB, refusing oversized files and decompression bombs (pixels, not bytes)."""
    if len(data) > limits.max_image_bytes:
        raise _too_large(len(data), limits, field)
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as e:
        raise TooLarge("image_too_large", str(e), field=field) from e
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
    try:
        return load_image(img)  # full decode + RGB, off the event loop (see load_images)
    except Exception as e:  # truncated or corrupt pixel data: the client's image, a 4xx
        raise BadInput("invalid_image", f"image could not be decoded: {e}", field=field) from e


async def load_images(
    inputs: list[str | bytes], limits: Limits, fields: list[str]
) -> list[Image.Image]:
    """Fetch/decode every input (strings: base64, data URI or URL; bytes: an upload)."""
    raw = [
        ref if isinstance(ref, bytes) else await image_bytes(ref, limits, field)
        for ref, field in zip(inputs, fields, strict=True)
    ]

    def decode_all() -> list[Image.Image]:
        return [open_image(data, limits, field) for data, field in zip(raw, fields, strict=True)]

    return await asyncio.to_thread(decode_all)
