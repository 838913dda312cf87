"""Views of kernel arguments without reference counting.

In a Numba kernel every array handed to another function (an inlined one included) and every
row view ``arr[i]`` is reference counted: an atomic increment and decrement of the array's
shared counter. In a loop over rows that does little work per row this is a large share of
the time, and with several threads the counters' cache lines move between cores. Measured on a
2-core EPYC (Zen 4), 1M rows x 200 candidates, 15 negatives, on one thread: ``NRT_incref`` and
``NRT_decref`` took 13-14 % of ``SimANSSampler.sample_columns`` (``perf``), the atomics of the
scratch buffers handed to the inlined row steps (7 per row) and of the arguments.

The pattern: a chunk worker allocates its scratch buffers and calls a ``*_rows`` function
with them; that function rebinds every array argument to :func:`borrow` of it and takes rows
with :func:`row`. The caller holds the real arrays for the whole call, so nothing borrowed can
outlive what it points into. Never return a borrowed array or store it anywhere.
"""

from numba import types
from numba.extending import intrinsic


@intrinsic
def row(typingctx, arr, i):
    """``arr[i]`` for an array of two or more dimensions, without a reference count.

    The view points into ``arr`` and owns nothing (no meminfo, no parent), so it must not
    outlive ``arr`` or leave the kernel (see the module docstring). No bounds check (as
    ``boundscheck`` is off)."""
    if not isinstance(arr, types.Array) or arr.ndim < 2 or not isinstance(i, types.Integer):
        return None
    layout = "C" if arr.layout == "C" else "A"
    retty = types.Array(arr.dtype, arr.ndim - 1, layout, readonly=not arr.mutable)

    def codegen(context, builder, signature, args):
        from numba.core import cgutils
        from numba.np.arrayobj import populate_array

        aryty, ity = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], ity, types.intp)
        shapes = cgutils.unpack_tuple(builder, ary.shape, aryty.ndim)
        strides = cgutils.unpack_tuple(builder, ary.strides, aryty.ndim)
        ptr = cgutils.get_item_pointer2(context, builder, ary.data, shapes, strides,
                                        aryty.layout, [idx] + [context.get_constant(types.intp, 0)]
                                        * (aryty.ndim - 1), wraparound=False)
        out = context.make_array(signature.return_type)(context, builder)
        populate_array(out, data=ptr, shape=shapes[1:], strides=strides[1:],
                       itemsize=ary.itemsize, meminfo=None)
        return out._getvalue()

    return retty(arr, i), codegen


@intrinsic
def borrow(typingctx, arr):
    """``arr`` itself, without a reference count (see :func:`row`); the caller keeps ``arr``
    alive for as long as the result is used."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        aryty = signature.args[0]
        src = context.make_array(aryty)(context, builder, args[0])
        out = context.make_array(signature.return_type)(context, builder)
        for name in ("shape", "strides", "data", "itemsize", "nitems"):
            setattr(out, name, getattr(src, name))
        out.meminfo = ir.Constant(src.meminfo.type, None)
        out.parent = ir.Constant(src.parent.type, None)
        return out._getvalue()

    return arr(arr), codegen
