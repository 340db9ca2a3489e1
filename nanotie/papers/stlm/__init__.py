"""Super Tiny Language Models.

Dylan Hillier, Leon Guertler, Cheston Tan, Palaash Agrawal, Ruirui Chen, Bobby Cheng,
2024. arXiv:2405.14159.

The idea. In a small language model most parameters sit in the token embedding and
the LM head: at hidden size 512 with GPT-2's 50,257 tokens, the embedding alone is
25.7M of a 55.9M model. STLMs remove them in two ways. (1) Byte-level embedding with
pooling: a subword tokenizer still marks where tokens begin and end, but a token's
vector is BUILT from its bytes by a small byte encoder and mean-pooled, and a small
byte decoder predicts all bytes of the next token in parallel: 2.56M parameters
instead of 25.73M (tied) or 51.46M (untied), 90-95% fewer. (2) Weight tying: the LM
head is the token embedding, and one feed-forward network is shared by all layers.

The ties, as aliasing (one Parameter object, several uses; gradients add):

    embedding / head:   logits = h E^T,   E = wte.weight = lm_head.weight
                        dL/dE = (dL/dE)_embedding + (dL/dE)_head
    FFN sharing:        FFN_l = FFN_0 for l = 1..L-1
                        dL/dW_FFN = sum_l dL/dW_FFN_l
                        params = params_unshared - (L - 1) params(FFN)

The byte-level path (W byte slots per token, byte width c, core width d):

    windows  (B, T, W)  ids in 0..257: the bytes, then PAD = 256; EOT = 257
    embed    e_tj = E_byte[b_tj] + P[j];  blocks c -> 2c -> d;  x_t = mean_j h_tj
    core     causal transformer over the T pooled vectors
    decode   u_t = reshape(h_t A, (W, c)) + P;  blocks;  logits_tj = u_tj B_out
    loss     mean over the NON-PAD slots of the next token: -log p_tj(b_{t+1, j})

What the paper claims is the parameter count (90% / 95% fewer in the embedding and
head; 81.62M untied, 55.89M tied, 34.66M tied with FFN sharing). It makes no quality
claim for the byte-level model: the authors' repository lists that report as in
progress, and the abstract leaves matching the base models' performance to future
work. The experiment checks the counts and MEASURES quality.

Which code the counts follow: the authors' code as it was when the paper appeared
(2 + 2 byte blocks, core hidden 512), which gives the paper's 2.56M. Their later code
(hidden 768, 4 + 7 byte blocks) gives 5.77M, about 85% / 92.5% fewer.

Differences from the paper:

- The tokenizer is nanotie's own byte-level BPE trained on the prose corpus (a few
  thousand tokens), not GPT-2's 50,257; nothing is downloaded.
- Grouped-query attention (16 query, 4 key/value heads) is built (:class:`GroupedQKV`)
  and counted; the miniatures use full multi-head attention. The core uses learned
  positions; the paper's RoPE has no parameters and is left out of the count.
- Byte positions are added once, e_tj = E_byte[b_tj] + P[j]; the authors' code adds
  ``x + pos_encoder(x)``, i.e. 2 x + P.
- A final norm sits before the decoder (nanotie's GPT core ends with one).
- The byte blocks use the tanh approximation of GELU.
- Tokens become their raw bytes; the authors' code round-trips them through text with
  replacement characters.
- The loss ignores PAD (256); the authors' code passes EOT (257) as the ignored id,
  so it scores every slot, pads included. ``byte_loss="all_slots"`` trains with that
  loss (variant (g)); the experiment reports both figures.
- Since the default loss never scores the pads, the byte decoder does not model
  where a token ends. For a fair bits-per-byte, the experiment adds the cost of coding
  each token's length with a unigram length model fitted on the training split, and
  it reports the bytes-only figure beside it.
- Pooling is a plain mean over all W slots, pads included (pads have an embedding of
  their own), as in the authors' code; byte blocks use the core's norm and bias
  settings.
- ``byte_head="softmax"`` (not in the paper) puts an ordinary (d, V) softmax head on
  the byte embedder: variant (f), which tells the pooling's cost from the decoder's.
- The miniature runs are tiny and short; the paper's benchmarks (BLiMP, ARC,
  HellaSwag, MMLU) are not reproduced.
"""

from .byte_windows import BYTE_VOCAB, EOT, PAD, ByteWindows
from .model import (STLM, ByteBlock, ByteDecoder, ByteEmbedder, ByteSelfAttention,
                    GroupedQKV, ProjectingMLP, STLMConfig, byte_cross_entropy, share_ffn)
from .params import (PAPER_BASE, PAPER_FIGURES, ffn_width, measured_split, millions,
                     paper_configs, parameter_budget)

__all__ = ["PAD", "EOT", "BYTE_VOCAB", "ByteWindows", "STLMConfig", "STLM", "ByteBlock",
           "ByteEmbedder", "ByteDecoder", "ByteSelfAttention", "ProjectingMLP", "GroupedQKV",
           "share_ffn", "byte_cross_entropy", "parameter_budget", "ffn_width",
           "measured_split", "PAPER_BASE", "paper_configs", "PAPER_FIGURES", "millions"]
