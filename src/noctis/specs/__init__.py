"""Spec models shared by custom resources and local YAML files."""
