"""Non-finite activations: strong steering (a large reflect or add, float16 overflow) can turn the
residual stream into inf/NaN. The engine checks each row's logits every step and fails that one
request with a 400 naming its steering, so NaN never reaches the wire and no other row is touched.
"""

from __future__ import annotations

import mlx.core as mx

from .errors import BadRequest, ServerError


def finite_rows(logits: mx.array) -> mx.array:
    """(B, V) logits -> (B,) bool, lazily: True where every logit of the row is finite."""
    return mx.isfinite(logits).all(axis=-1)


def non_finite_error(spec) -> BadRequest | ServerError:
    """The error for a request whose activations went non-finite."""
    applied = spec.steering_applied
    if not applied:
        return ServerError("the model produced non-finite logits (NaN or infinity) for this request")
    shown = ", ".join(f"{a.get('vector')} {a.get('op', 'add')} alpha {a.get('alpha')}" for a in applied[:4])
    if len(applied) > 4:
        shown += f" and {len(applied) - 4} more"
    return BadRequest(
        f"the steering ({shown}) drove the model's activations to non-finite values (NaN or infinity); "
        "use a smaller alpha or fewer layers",
        param="steer",
        code="non_finite_activations",
    )
