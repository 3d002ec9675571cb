"""Import the officially released checkpoints (CVMI-Lab VFMTok tokenizer, LlamaGen/VFMTok GPTs, DINOv2) into
vfmtok checkpoint folders. Top layer: models never import this package."""
