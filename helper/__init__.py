"""The helper aggregator: the second server of a statistics release (docs/adr/0019).

It receives one additive share of every agency node's histogram (sealed to it, relayed by
the coordinator), checks that the release is a logged question the coordinator signed and
charged, charges its own privacy-budget ledger, adds OpenDP's discrete Laplace noise to
the sum of its shares and returns only that noisy sum, signed. Run by an organisation
other than the coordinator's operator; never imports another service.
"""
