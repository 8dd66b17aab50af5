"""Loss formulas as pure functions of tensors: no configs, no training loop, no data.

One module per family of objectives; everything public is re-exported here, so callers write
`import kdrun.losses.functional as F` and `F.kd_loss(...)`. Shapes: logits (B, K),
integer targets (B,); functions return the batch mean unless they say otherwise.

- `kd`: cross-entropy, KL at temperature, the alpha-mix, soft cross-entropy, hard teacher
  labels, MSE on logits, the uniform-teacher control (RCD);
- `oracle`: teachers built from the Bayes probabilities p* (paper 001's distorted teachers);
- `ptloss`: paper 004's perturbed Maclaurin loss, its proxy teacher and the Q-hat score;
- `baselines`: paper 004's baselines (label-smoothed teacher, focal, flooding, Tf-KD);
- `retrieval`: paper 001's generalised softmax cross-entropy and double distillation;
- `features`: feature-map matching (FitNets);
- `divergences`: reverse KL and the generalized Jensen-Shannon divergence (sequence-level KD work).
"""

from kdrun.losses.functional.baselines import *  # noqa: F401,F403
from kdrun.losses.functional.divergences import *  # noqa: F401,F403
from kdrun.losses.functional.features import *  # noqa: F401,F403
from kdrun.losses.functional.kd import *  # noqa: F401,F403
from kdrun.losses.functional.oracle import *  # noqa: F401,F403
from kdrun.losses.functional.ptloss import *  # noqa: F401,F403
from kdrun.losses.functional.retrieval import *  # noqa: F401,F403
