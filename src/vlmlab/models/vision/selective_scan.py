"""Mamba's selective scan: a chunked parallel pure-PyTorch path (CPU-trainable), mamba-ssm's CUDA kernel when present.

h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t u_t,   y_t = C_t · h_t + D u_t   (then y ⊙ silu(z) when z is given)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # the official CUDA kernels, used automatically for CUDA tensors when installed
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _cuda_selective_scan = None


def cuda_kernel_available() -> bool:
    return _cuda_selective_scan is not None


def _per_channel(x: torch.Tensor, channels: int) -> torch.Tensor:
    """B or C as (b, d, l, n): (b, n, l) is shared by every channel, (b, g, n, l) by d/g channels each."""
    if x.dim() == 3:
        return x.transpose(1, 2)[:, None].expand(-1, channels, -1, -1)
    groups = x.shape[1]
    return x.transpose(2, 3).repeat_interleave(channels // groups, dim=1)


def _blocked_scan(a: torch.Tensor, x: torch.Tensor, block: int) -> torch.Tensor:
    """h_t = a_t h_{t−1} + x_t over dim 2 (h_{−1} = 0) in two levels, O(l) work and block + l/block steps.

    The sequence is cut into blocks; one pass over the offsets inside a block scans *all* blocks at once,
    a pass over the blocks carries each block's final state into the next, and one fused update adds the
    carried state (times the running product of a) to every position. Every product stays in (0, 1].
    """
    b, d, length, n = a.shape
    pad = (-length) % block
    if pad:
        a = torch.cat([a, a.new_ones(b, d, pad, n)], dim=2)
        x = torch.cat([x, x.new_zeros(b, d, pad, n)], dim=2)
    m = a.shape[2] // block
    # unbind, not indexing: one backward op per tensor instead of a zero-filled gradient per slice
    a_j = a.view(b, d, m, block, n).unbind(3)
    x_j = x.view(b, d, m, block, n).unbind(3)
    prod, state = [a_j[0]], [x_j[0]]
    for j in range(1, block):  # every block at once, one offset at a time
        prod.append(prod[-1] * a_j[j])
        state.append(a_j[j] * state[-1] + x_j[j])
    prod_t, state_t = torch.stack(prod, dim=3), torch.stack(state, dim=3)  # (b, d, m, block, n)
    carry, carries = x.new_zeros(b, d, n), []
    for block_prod, block_state in zip(prod[-1].unbind(2), state[-1].unbind(2)):  # the state entering each block
        carries.append(carry)
        carry = block_prod * carry + block_state
    h = state_t + prod_t * torch.stack(carries, dim=2)[:, :, :, None]
    return h.view(b, d, m * block, n)[:, :, :length]


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    chunk: int = 8,
    backend: str = "auto",
) -> torch.Tensor:
    """u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d,). Returns (b, d, l).

    `backend`: `auto` (CUDA kernel for CUDA tensors when mamba-ssm is installed, else `torch`), `torch`, `cuda`.
    The torch path scans in blocks of `chunk` tokens (all blocks in parallel, then the carries across
    blocks): about chunk + l/chunk vectorised steps, never one per token.
    """
    use_cuda = backend == "cuda" or (backend == "auto" and u.is_cuda and _cuda_selective_scan is not None)
    if use_cuda:
        if _cuda_selective_scan is None:
            raise RuntimeError("selective_scan: backend 'cuda' needs the mamba-ssm package")
        return _cuda_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, length = u.shape
    dtype = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    decay = torch.exp(delta[..., None] * A.float()[None, :, None, :])  # (b, d, l, n)
    drive = (delta * u)[..., None] * _per_channel(B.float(), d)  # (b, d, l, n)
    states = _blocked_scan(decay, drive, max(1, chunk))
    y = (states * _per_channel(C.float(), d)).sum(-1)
    if D is not None:
        y = y + D.float()[None, :, None] * u
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True) -> torch.Tensor:
    """The recurrence one token at a time (a readable reference for tests; slow)."""
    b, d, length = u.shape
    u, delta = u.double(), delta.double()
    if delta_bias is not None:
        delta = delta + delta_bias.double()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bc, Cc = _per_channel(B.double(), d), _per_channel(C.double(), d)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A.double()) * h + delta[:, :, t, None] * Bc[:, :, t] * u[:, :, t, None]
        ys.append((h * Cc[:, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.double()[None, :, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y
