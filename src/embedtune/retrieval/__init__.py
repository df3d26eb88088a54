"""The retrieval library every stage that ranks shares: the candidate retrievers (`retrievers`,
`fusion`, `lexical`), ranking with one tie rule (`ranking`, `scores`), the metrics, scoring a
split (`evaluation`) with its bootstrap intervals (`bootstrap`), the held-out slice and the
selection rule (`selection`), the tuned-model interface (`tuned`) and the BEIR reader (`beir`).
"""
