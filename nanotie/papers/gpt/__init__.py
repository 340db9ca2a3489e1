"""The baseline: a small byte-level GPT with a tied embedding and output head.

Not a paper of its own. It is the reference the six papers compare against, and
the pretrained model that Tied-LoRA and Dynamic Layer Tying start from. The model
is :class:`~nanotie.nn.transformer.GPT` (nanoGPT's architecture); the tie is Press & Wolf's
(2017, arXiv:1608.05859): the output head reuses the input embedding matrix E, so
the logits are h E^T and E's gradient is the sum of its two uses.
"""
