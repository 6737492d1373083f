"""Models: loading Hugging Face models from an id, a path or a GGUF file (converted once), and the
tiny-model factory."""
