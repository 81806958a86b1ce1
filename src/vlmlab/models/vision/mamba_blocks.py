"""Mamba mixers for vision: a (bi)directional 1-D mixer (Vim) and the 2-D four-direction SS2D mixer (VMamba)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlmlab.models.vision.selective_scan import selective_scan


def _dt_bias(channels: int, dt_min: float = 1e-3, dt_max: float = 1e-1) -> torch.Tensor:
    """Mamba's Δ initialisation: softplus(bias) log-uniform in [dt_min, dt_max]."""
    dt = torch.exp(torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus


def _a_log(channels: int, d_state: int) -> torch.Tensor:
    """A = −[1, 2, ..., N] for every channel (S4D-real), stored as log so A stays negative."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(channels, 1)


class MambaMixer(nn.Module):
    """Selective-SSM mixer over a token sequence (b, l, dim); `bidirectional` adds a reversed scan (Vim)."""

    def __init__(self, dim: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, bidirectional: bool = False):
        super().__init__()
        inner = expand * dim
        self.inner, self.d_state, self.dt_rank = inner, d_state, math.ceil(dim / 16)
        self.directions = 2 if bidirectional else 1
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.ModuleList(
            nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1) for _ in range(self.directions)
        )
        self.x_proj = nn.ModuleList(
            nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False) for _ in range(self.directions)
        )
        self.dt_proj = nn.ModuleList(nn.Linear(self.dt_rank, inner) for _ in range(self.directions))
        for proj in self.dt_proj:
            with torch.no_grad():
                proj.bias.copy_(_dt_bias(inner))
        self.A_log = nn.Parameter(torch.stack([_a_log(inner, d_state) for _ in range(self.directions)]))
        self.D = nn.Parameter(torch.ones(self.directions, inner))
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (b, inner, l) each
        y = 0
        for i in range(self.directions):
            ui = u if i == 0 else u.flip(-1)
            ui = F.silu(self.conv[i](ui)[..., :length])
            dt, B, C = self.x_proj[i](ui.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
            delta = (dt @ self.dt_proj[i].weight.T).transpose(1, 2)
            yi = selective_scan(
                ui,
                delta,
                -torch.exp(self.A_log[i]),
                B.transpose(1, 2),
                C.transpose(1, 2),
                self.D[i],
                delta_bias=self.dt_proj[i].bias,
            )
            y = y + (yi if i == 0 else yi.flip(-1))
        return self.out_proj((y * F.silu(z)).transpose(1, 2))


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(b, c, h, w) -> (b, 4, c, h·w): row-major, column-major, and both reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def cross_merge(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `cross_scan` for the four outputs, summed: (b, 4, c, h·w) -> (b, c, h, w)."""
    b, _, c, _ = y.shape
    rows = y[:, 0] + y[:, 2].flip(-1)
    cols = y[:, 1] + y[:, 3].flip(-1)
    return rows.view(b, c, h, w) + cols.view(b, c, w, h).transpose(2, 3)


class SS2D(nn.Module):
    """VMamba's 2-D selective scan: depthwise conv, four scan directions with their own Δ/B/C/A/D, merged."""

    directions = 4

    def __init__(self, dim: int, d_state: int = 16, expand: int = 2):
        super().__init__()
        inner = expand * dim
        k = self.directions
        self.inner, self.d_state, self.dt_rank = inner, d_state, math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        self.x_proj_weight = nn.Parameter(torch.randn(k, self.dt_rank + 2 * d_state, inner) / math.sqrt(inner))
        self.dt_proj_weight = nn.Parameter(torch.randn(k, inner, self.dt_rank) / math.sqrt(self.dt_rank))
        self.dt_proj_bias = nn.Parameter(torch.stack([_dt_bias(inner) for _ in range(k)]))
        self.A_log = nn.Parameter(_a_log(k * inner, d_state))
        self.D = nn.Parameter(torch.ones(k * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b, h, w, dim) channels-last."""
        b, h, w, _ = x.shape
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv(u.permute(0, 3, 1, 2)))  # (b, inner, h, w)
        xs = cross_scan(u)  # (b, 4, inner, l)
        proj = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dt, B, C = proj.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        delta = torch.einsum("bkrl,kdr->bkdl", dt, self.dt_proj_weight)
        length = h * w
        y = selective_scan(
            xs.reshape(b, -1, length),
            delta.reshape(b, -1, length),
            -torch.exp(self.A_log),
            B,
            C,
            self.D,
            delta_bias=self.dt_proj_bias.reshape(-1),
        )
        y = cross_merge(y.view(b, self.directions, self.inner, length), h, w).permute(0, 2, 3, 1)
        return self.out_proj(self.out_norm(y) * F.silu(z))
