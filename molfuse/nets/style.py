"""A learned style codebook on any score network: the student of a distillation merge (MATH §5, DMM).

``StyledNet(net, num_styles)`` keeps ``net`` as it is and adds a codebook ``e_i`` (one row per
teacher) and a small MLP whose output is *added to the output of the net's time embedding* by a
forward hook, so no architecture is forked: ``student(x, t, cond=i)`` is ``net`` with its time
embedding shifted by ``MLP(e_i)``. A style is an index (one teacher) or weights ``w`` over the
styles (style mixing, ``ẽ = Σ w_i e_i`` before the MLP). The MLP's last layer starts at zero, so a
fresh student is exactly its base net for every style (initialise the base from a teacher or the
teachers' common parent).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["StyledNet", "STYLE_ARCHITECTURE", "TIME_EMBEDDINGS", "style_weights"]

STYLE_ARCHITECTURE = "style_student"
# Submodules that hold a net's time embedding, tried in order when ``embed_at`` is not given.
TIME_EMBEDDINGS = ("time_embed", "time_emb")


def _time_embedding(net: nn.Module, embed_at: str | None) -> tuple[str, nn.Module, int]:
    """(name, module, output width) of the submodule whose output is the time embedding."""
    names = [embed_at] if embed_at else [n for n in TIME_EMBEDDINGS if hasattr(net, n)]
    if not names:
        raise ValueError(f"{type(net).__name__} has none of the time-embedding modules {TIME_EMBEDDINGS}; "
                         "name the module whose output is the time embedding with embed_at=")
    try:
        module = net.get_submodule(names[0])
    except AttributeError:
        raise ValueError(f"embed_at={names[0]!r}: {type(net).__name__} has no such submodule") from None
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"embed_at={names[0]!r} holds no nn.Linear, so its output width is unknown")
    return names[0], module, linears[-1].out_features


def style_weights(style: Any, num_styles: int, batch: int, like: Tensor) -> Tensor:
    """A style argument as mixing weights (batch, num_styles) on the simplex.

    Args:
        style: an int (one style for every sample), (batch,) integer indices, or weights
            (num_styles,) / (batch, num_styles) that sum to 1 (style mixing; negative weights are
            extrapolation and allowed, but they must be finite and sum to 1).
        num_styles: the codebook's size.
        batch: the batch size.
        like: a tensor whose dtype and device the weights take.
    """
    if style is None:
        raise ValueError(f"a style student needs a style: an index in 0..{num_styles - 1} or {num_styles} "
                         "mixing weights (cond=...)")
    s = torch.as_tensor(style, device=like.device)
    if not s.is_floating_point():
        idx = s.reshape(-1).long()
        if idx.numel() not in (1, batch) or bool((idx < 0).any() | (idx >= num_styles).any()):
            raise ValueError(f"style indices must be (batch,) = ({batch},) or one index, each in 0..{num_styles - 1}; "
                             f"got {s.tolist() if s.numel() <= 8 else tuple(s.shape)}")
        return nn.functional.one_hot(idx, num_styles).to(like.dtype).expand(batch, num_styles)
    w = s.to(like.dtype)
    w = w[None] if w.dim() == 1 else w
    if w.dim() != 2 or w.shape[1] != num_styles or w.shape[0] not in (1, batch):
        raise ValueError(f"style weights must be ({num_styles},) or (batch, {num_styles}); got {tuple(s.shape)}")
    if not bool(torch.isfinite(w).all()) or bool(((w.sum(1) - 1).abs() > 1e-5).any()):
        raise ValueError(f"style weights must be finite and sum to 1 (ẽ = Σ w_i e_i); got sums {w.sum(1).tolist()[:4]}")
    return w.expand(batch, num_styles)


class StyledNet(nn.Module):
    """``net`` plus a learned style codebook added to its time embedding (MATH §5, DMM).

    Args:
        net: any molfuse score network with a time-embedding submodule (``time_embed`` or
            ``time_emb``, else ``embed_at``) whose output is (batch, width).
        num_styles: codebook rows (one per teacher).
        code_dim: width of a code ``e_i``.
        hidden: width of the MLP ``code -> time-embedding shift`` (default ``2 * code_dim``).
        embed_at: name of the time-embedding submodule.
        base: the base architecture ``{name, config}`` for the card (default ``net.architecture``).

    ``forward(x, t, cond=style, mask=None)``: ``cond`` is the style (see :func:`style_weights`);
    the base net is called unconditionally (``cond=None``) with ``mask`` when given.
    """

    def __init__(self, net: nn.Module, num_styles: int, code_dim: int = 32, hidden: int | None = None,
                 embed_at: str | None = None, base: dict | None = None):
        super().__init__()
        if isinstance(num_styles, bool) or not isinstance(num_styles, int) or num_styles < 1:
            raise ValueError(f"num_styles must be an integer >= 1; got {num_styles!r}")
        base = base or getattr(net, "architecture", None)
        if not isinstance(base, dict) or "name" not in base:
            raise ValueError("StyledNet needs the base architecture {name, config} (net.architecture or base=)")
        self.net = net
        self.embed_at, module, width = _time_embedding(net, embed_at)
        hidden = hidden or 2 * code_dim
        self.codebook = nn.Embedding(num_styles, code_dim)
        nn.init.normal_(self.codebook.weight, std=1.0)
        self.style_mlp = nn.Sequential(nn.Linear(code_dim, hidden), nn.SiLU(), nn.Linear(hidden, width))
        with torch.no_grad():  # a fresh student is its base net for every style
            self.style_mlp[-1].weight.zero_()
            self.style_mlp[-1].bias.zero_()
        self.num_styles, self.width = num_styles, width
        self.architecture = {"name": STYLE_ARCHITECTURE, "config": {
            "base": {"name": base["name"], "config": dict(base.get("config") or {})}, "num_styles": num_styles,
            "code_dim": code_dim, "hidden": hidden, "embed_at": self.embed_at}}
        self.prediction = getattr(net, "prediction", "eps")
        if getattr(net, "space", None) is not None:
            self.space = net.space
        self.null_cond = None  # the style is not dropped: every call names one
        self._shift: Tensor | None = None
        module.register_forward_hook(_AddShift(self))

    def shift(self, weights: Tensor) -> Tensor:
        """The time-embedding shift (batch, width) of mixing weights (batch, num_styles)."""
        return self.style_mlp(weights @ self.codebook.weight)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        w = style_weights(cond, self.num_styles, x.shape[0], self.codebook.weight)
        self._shift = self.shift(w)
        try:
            return self.net(x, t) if mask is None else self.net(x, t, mask=mask)
        finally:
            self._shift = None

    def grow(self, new_styles: int, seed: int = 0) -> "StyledNet":
        """A copy with ``new_styles`` more codebook rows (incremental merging, MATH §5).

        Old rows, the MLP and the base net are copied; new rows are drawn ``N(0, I)`` from ``seed``
        like the first ones. The copy is a new module (``self`` is unchanged, e.g. to serve as the
        frozen previous student).
        """
        if isinstance(new_styles, bool) or not isinstance(new_styles, int) or new_styles < 1:
            raise ValueError(f"new_styles must be an integer >= 1; got {new_styles!r}")
        cfg = self.architecture["config"]
        out = StyledNet(copy.deepcopy(self.net), self.num_styles + new_styles, cfg["code_dim"], cfg["hidden"],
                        self.embed_at, cfg["base"])
        with torch.no_grad():
            out.style_mlp.load_state_dict(self.style_mlp.state_dict())
            g = torch.Generator().manual_seed(seed)
            rows = torch.randn(new_styles, cfg["code_dim"], generator=g).to(self.codebook.weight)
            out.codebook.weight.copy_(torch.cat([self.codebook.weight, rows]))
        return out

    @classmethod
    def from_config(cls, build: Any, base: dict, num_styles: int, code_dim: int = 32, hidden: int | None = None,
                    embed_at: str | None = None) -> "StyledNet":
        """Rebuild from a card's ``architecture.config`` with ``build(name, config)`` for the base."""
        if not isinstance(base, dict) or not isinstance(base.get("name"), str):
            raise ValueError(f"base must be an architecture {{name, config}}; got {base!r}")
        return cls(build(base["name"], dict(base.get("config") or {})), num_styles, code_dim, hidden, embed_at, base)


class _AddShift:
    """Forward hook: the time embedding's output plus the student's current style shift."""

    def __init__(self, owner: StyledNet):
        self.owner = owner

    def __call__(self, module: nn.Module, inputs: Any, out: Tensor) -> Tensor:
        shift = self.owner._shift
        if shift is None:  # the base net called on its own: unchanged
            return out
        if out.dim() != 2 or out.shape[-1] != shift.shape[-1] or out.shape[0] not in (1, shift.shape[0]):
            raise ValueError(f"the time embedding {self.owner.embed_at!r} returned {tuple(out.shape)}; a style shift "
                             f"needs (batch, {shift.shape[-1]}) with batch {shift.shape[0]}")
        return out + shift.to(out.dtype)

    def __deepcopy__(self, memo: dict) -> "_AddShift":
        return _AddShift(copy.deepcopy(self.owner, memo))
