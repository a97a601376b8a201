"""SAM2 adapter: everything that touches the ``sam2`` package's internals (build, tensor-fed video segmentation
with gradients, SAM2's training loss, LoRA presets). See ``video.py`` for the API."""
