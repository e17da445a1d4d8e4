"""Membership changes with quorum guardrails: list, add, promote, remove and replace members.

Pure planning (guardrails, the new member's settings, kubeadm manifests, certificate checks)
is kept apart from the workflows that talk to etcd, so the rules have fast unit tests.
"""
