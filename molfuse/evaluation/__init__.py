"""Modality-free evaluation: closed-form exactness tables and the figures people look at.

``exactness`` checks the fusion core on Gaussian mixtures, ``exactness_clouds`` on masked
states of mixed sizes — centred point clouds and residue chains (MATH §6); ``plots`` draws 2-D samples over density
contours (matplotlib, imported only when used). Per-modality metrics live with their
modality (:mod:`molfuse.modalities`).
"""
