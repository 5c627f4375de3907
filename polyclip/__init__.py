"""polyclip: multilingual text encoders distilled into a vision-language teacher's space."""

__version__ = "0.1.0"
