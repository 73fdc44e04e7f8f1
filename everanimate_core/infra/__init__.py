"""Infrastructure under the method: run identity and checkpoints, run folders, video/audio I/O,
resizing, LoRA files. Nothing here knows how a chunk is sampled."""
