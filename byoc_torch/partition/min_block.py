"""``min_block_size``: TVM-side blocks too small to be worth two crossings run in LibTorch.

Place in the data flow: the frontend applies ``min_block_size`` to the FX graph it imports
(:mod:`byoc_torch.frontend.small_blocks`); on any Relax module, the partition pass itself calls
:func:`absorb_small_relax_blocks`: a connected block of Relax operator calls that all have a
TorchScript equivalent (:data:`byoc_torch.partition.relax_ops.CONVERTERS`), smaller than
``min_block_size``, fed by torch work and feeding torch work, becomes torchops. A block holding
any call without an equivalent stays in TVM whole.
"""

from __future__ import annotations

__all__ = ["absorb_small_relax_blocks"]


def absorb_small_relax_blocks(mod, min_block_size: int):
    """``mod`` with every small Relax block between torchops turned into torchops."""
    from tvm import relax

    if min_block_size <= 1:
        return mod
    import tvm

    updates = {}
    for gv, func in sorted(mod.functions.items(), key=lambda kv: kv[0].name_hint):
        if not isinstance(func, relax.Function) or func.attrs.get("Codegen") is not None:
            continue
        if not isinstance(func.body, relax.SeqExpr):
            continue
        blocks = [_absorb_in_block(b, min_block_size) for b in func.body.blocks]
        if all(new is old for new, old in zip(blocks, func.body.blocks, strict=True)):
            continue
        body = relax.SeqExpr(blocks, func.body.body)
        updates[gv] = relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
    if not updates:
        return mod
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in updates.items():
        out[gv] = func
    return relax.transform.Normalize()(out)


def _absorb_in_block(block, min_block_size: int):
    import tvm
    from tvm import relax

    import relay_ext

    from .relax_ops import CONVERTERS, relax_call_to_torchop

    bindings = list(block.bindings)
    torch_vars = set()
    for b in bindings:
        if relay_ext.is_torchop(b.value) or (
            isinstance(b.value, relax.TupleGetItem) and b.value.tuple_value in torch_vars
        ):
            torch_vars.add(b.var)

    def movable(b) -> bool:
        v = b.value
        return (
            isinstance(b, relax.VarBinding)
            and isinstance(v, relax.Call)
            and isinstance(v.op, tvm.ir.Op)
            and v.op.name in CONVERTERS
            and isinstance(b.var.ty, relax.TensorType)
            and all(isinstance(a, relax.Var | tvm.ir.GenericConst) for a in v.args)
        )

    members = {b.var: b for b in bindings if movable(b)}
    parent = {v: v for v in members}

    def find(v):
        while parent[v] is not v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    users: dict = {}
    for b in bindings:
        for a in relax.analysis.free_vars(b.value):
            users.setdefault(a, []).append(b.var)
            if b.var in members and a in members:
                parent[find(b.var)] = find(a)
    components: dict = {}
    for v in members:
        components.setdefault(find(v), []).append(v)
    absorbed = set()
    for component in components.values():
        if len(component) >= min_block_size:
            continue
        inside = set(component)
        fed = any(
            a in torch_vars for v in inside for a in relax.analysis.free_vars(members[v].value)
        )
        feeds = any(u in torch_vars for v in inside for u in users.get(v, []) if u not in inside)
        if fed and feeds:
            absorbed |= inside
    if not absorbed:
        return block
    new_bindings = [
        relax.VarBinding(b.var, relax_call_to_torchop(b.value, b.var.ty))
        if b.var in absorbed
        else b
        for b in bindings
    ]
    if isinstance(block, relax.DataflowBlock):
        return relax.DataflowBlock(new_bindings)
    return relax.BindingBlock(new_bindings)
