"""LoRA post-training: the drift family (``degrade``) and the stage 1/2 trainer (``trainer``)."""
