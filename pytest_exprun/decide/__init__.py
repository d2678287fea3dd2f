"""Deciding: the protocol's rules, the statistics, the rule's error rates and the sequential design.

Everything here works on numbers and records handed in; nothing reads or writes files,
prints, or knows about pytest, so each rule can be checked with plain asserts.
"""
