"""Modality adapters (images, molecules, proteins): data, networks, metrics and file formats.

Each subpackage imports its heavy dependencies itself and, when they are missing, says which
extra to install. Subpackages may expose ``register()`` to add their dataset kinds and
architectures to the training and campaign registries.
"""
