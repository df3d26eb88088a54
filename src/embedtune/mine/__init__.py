"""Stage `mine` (`python -m embedtune.mine`): training data that teaches ranking, data/mined/.

Parts: `negatives` (the seen-corpus set-aside, filtering and hard-negative mining), `mined` (the
mined data type every later stage reads).
"""
