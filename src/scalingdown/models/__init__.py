"""Models: loading Hugging Face models from an id or a path, and the tiny-model factory."""
