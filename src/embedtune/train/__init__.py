"""Stage `train` (`python -m embedtune.train`, or `torchrun -m embedtune.train`): models/tuned/.

Parts: `methods/` (one module per `train.method`, and the held-out epoch pick), `losses/` (one
module per `train.loss`), `distributed` (what several processes under torchrun share).
"""
