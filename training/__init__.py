"""Training: distilling multilingual student text encoders into a teacher's embedding space."""
