"""What a model is: base models, language codes, adapter kinds and the adapter store."""
