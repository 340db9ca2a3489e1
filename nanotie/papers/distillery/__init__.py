"""Laughing Hyena distillery: a long convolution distilled into a small recurrence.

The mechanism is in ``recurrence.py`` (the modal form and its O(1) step); the tie is in
``distilled.py``, where the distilled model reuses the original's Parameters.

Laughing Hyena Distillery: Extracting Compact Recurrences From Convolutions.
Massaroli, Poli, Fu, Kumbong, Parnichkun, Timalsina, Romero, McIntyre, Chen, Rudra,
Zhang, Re, Ermon, Bengio (NeurIPS 2023), arXiv:2310.18780. (MultiHyena, its Secs. 4-5,
lives with Hyena in ``nanotie.papers.hyena``.)

The idea. A Hyena LM trains in parallel with FFT convolutions but generates slowly:
each new token needs the whole past. Distillation replaces each long filter h by a
small linear state-space model in modal (diagonal) form whose impulse response
approximates h,

    ĥ_0 = D,        ĥ_t = Re Σ_k R_k λ_k^(t-1)        (t >= 1; K complex modes)

and runs it as a recurrence with a fixed-size state, O(1) time and memory per token:

    y_t = Re Σ_k R_k s_{t-1,k} + D u_t,        s_t = λ ⊙ s_{t-1} + u_t

The poles and residues come from model-order reduction (``reduction.py``: the Hankel
singular values bound any order-d fit; ERA starts it, modal least squares refines it,
balanced truncation is the textbook comparison). MultiHyena's tie carries over: one
set of poles per head, stepping a state for each of the head's N² channels.

The tie. The distilled LM is the original with one step swapped: it holds the SAME
embedding (= head), norms, MLPs, projections, short convolutions and Dskip objects,
and only the implicit filters are gone. Training the original moves the distilled
model's shared weights too, as a tied model's two uses of one weight move together.

Where things are:
    recurrence.py  the modal recurrence: impulse response, parallel, prefill, one step
    reduction.py   a filter -> a modal SSM: Hankel SVD, two lower bounds, ERA,
                   balanced truncation, modal refinement, order selection
    distilled.py   ``distill(model, order or tol)``: the LM with modal filters,
                   sharing every other Parameter with the original
    generate.py    O(1)-per-token generation: short-conv cache + modal state; and the
                   cached (undistilled) Hyena, O(L) per token
    throughput.py  per-token time and state against context length: Hyena
                   recomputing, cached, a KV-cache Transformer, distilled
    study.py       the distillation part of the ``hyena`` experiment and its plots

Differences from the paper:
- Distillation is ERA + modal least squares (``scipy.optimize.least_squares``) per
  filter (balanced truncation beside them for comparison), with the order chosen per
  filter by a relative-error tolerance; the bounds are finite-Hankel Eckart-Young
  ones (sigma_{d+1}/sqrt(n) and the tighter max over block heights), not the AAK
  theory.
- The distilled models are scored at the training context (64 bytes in the quick
  profile). The recurrent form may run past it (the modal filters are defined for
  every t); the parallel form stops there.
- Throughput is measured on a CPU, batch 1, with untrained models of the miniature
  LM shape (the time of a step does not depend on the weights; trained filters are
  only as long as the training context). The fair Hyena baseline keeps the gated
  inputs of the past (``generate.ConvCache``, O(L) per token); the naive one re-runs
  its whole forward pass per token, as ``HyenaLM.generate`` does.
"""

from .distilled import DistilledHyenaLM, distill
from .recurrence import ModalRecurrence, modal_impulse_response
from .reduction import DistillConfig, ModalFilterBank, distill_filter, distill_filters

__all__ = ["ModalRecurrence", "modal_impulse_response", "DistillConfig", "ModalFilterBank",
           "distill_filter", "distill_filters", "DistilledHyenaLM", "distill"]
