"""The HumanEval+ checks, as they run inside the sandbox: the canonical solution's outputs on every
input, and a candidate's outputs compared with them.

This file is executed, as source, inside sandboxed programs (`code_tasks` appends it to them, in a
namespace of its own so that its names cannot collide with the candidate's): the standard library
only, imports inside the functions. The evaluating process imports it too, to read outputs back.

Values cross the process boundary as tagged JSON, so that a tuple stays a tuple (`(1, 2) != [1,
2]` in Python) and a dict keeps non-string keys: lists, strings, numbers (inf and nan included),
booleans and None as themselves; `{"t": [...]}` tuple, `{"s": [...]}` set, `{"fs": [...]}`
frozenset, `{"d": [[k, v], ...]}` dict, `{"c": [re, im]}` complex, `{"b": "hex"}` bytes, `{"i":
"0x..."}` an int of more than 4000 digits.

Comparison, as the evalplus release grades: equal outputs pass; otherwise, when the problem has
an absolute tolerance (`atol`, or 1e-6 for float outputs), an output of the same type (and length)
within `atol` + 1e-7 relative passes; `find_zero` (HumanEval/32) passes when the polynomial's value
at the returned point is within `atol` of 0. Inputs that violate the problem's `contract` are
skipped (62 plus inputs of HumanEval/32 and 1 base input of HumanEval/116 in the release). An
output whose JSON is longer than `LARGE` and that must match exactly is kept as a digest of its
normal form (`_normal`: the values Python calls equal share it), which keeps the reference of the
whole set at a few MB instead of 300.
"""

_HUGE = 10**4000
_FLAT = {int, float, str, type(None)}


def encode(value):
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _HUGE:
        return {"i": hex(value)}  # decimal conversion of such ints is refused (sys.get_int_max_str_digits)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        kinds = set(map(type, value))
        if kinds <= _FLAT | {bool} and (int not in kinds or all(-_HUGE < v < _HUGE for v in value if type(v) is int)):
            return list(value)  # the common large output, without a call per element
        return [encode(v) for v in value]
    kind = {tuple: "t", set: "s", frozenset: "fs"}.get(type(value))
    if kind:
        items = [encode(v) for v in value]
        return {kind: items if kind == "t" else sorted(items, key=repr)}
    if isinstance(value, dict):
        return {"d": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, complex):
        return {"c": [value.real, value.imag]}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    raise TypeError(f"an output of type {type(value).__name__} cannot be compared")


def decode(value):
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    ((kind, items),) = value.items()
    if kind == "t":
        return tuple(decode(v) for v in items)
    if kind in ("s", "fs"):
        return (set if kind == "s" else frozenset)(decode(v) for v in items)
    if kind == "d":
        return {decode(k): decode(v) for k, v in items}
    if kind == "c":
        return complex(*items)
    if kind == "b":
        return bytes.fromhex(items)
    if kind == "i":
        return int(items, 16)
    raise ValueError(f"unknown tag {kind!r}")


def _normal(value):
    """`encode` with Python's equalities made plain (True == 1, 2.0 == 2, dicts and sets in any
    order), for a digest that equal values share."""
    import math

    if isinstance(value, (list, tuple)):
        kinds = set(map(type, value))
        if kinds <= _FLAT:  # the common large output, at C speed where it can be
            items = (
                [v if type(v) is not float else int(v) if v.is_integer() else v for v in value]
                if float in kinds
                else list(value)
            )
        else:
            items = [_normal(v) for v in value]
        return items if isinstance(value, list) else {"t": items}
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, (set, frozenset)):
        return {"s": sorted((_normal(v) for v in value), key=repr)}
    if isinstance(value, dict):
        return {"d": sorted(([_normal(k), _normal(v)] for k, v in value.items()), key=repr)}
    return encode(value)


def _normal_text(value) -> str:
    import json

    normal = _normal(value)
    try:
        return json.dumps(normal, separators=(",", ":"))
    except ValueError:  # an int of more than 4300 digits inside a flat list
        return json.dumps(encode(normal), separators=(",", ":"))


def digest(value) -> str:
    import hashlib

    return hashlib.sha256(_normal_text(value).encode()).hexdigest()


LARGE = 1000  # characters of JSON: a larger output that must match exactly is kept as its digest


def reference_outputs(contract_fn, solution_fn, inputs: list, atol: float, entry_point: str) -> dict:
    """For each input: whether it satisfies the contract, and the solution's output (None when it
    does not; `{"h": digest}` when it is large and compared exactly); the solution's total time."""
    import copy
    import hashlib
    import time

    valid, outputs, seconds = [], [], 0.0
    for args in inputs:
        try:
            contract_fn(*copy.deepcopy(args))
        except Exception:  # noqa: BLE001  (a violated contract raises AssertionError, or fails in its own code)
            valid.append(False)
            outputs.append(None)
            continue
        started = time.perf_counter()
        out = solution_fn(*copy.deepcopy(args))
        seconds += time.perf_counter() - started
        valid.append(True)
        if entry_point != "find_zero" and atol == 0 and not _is_floats(out):
            text = _normal_text(out)
            if len(text) > LARGE and "NaN" not in text:
                outputs.append({"h": hashlib.sha256(text.encode()).hexdigest()})
                continue
        outputs.append(encode(out))
    return {"valid": valid, "outputs": outputs, "seconds": seconds}


def _is_floats(x) -> bool:
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(v, float) for v in x)


def _close(out, exp, atol: float) -> bool:
    import math

    if isinstance(exp, (list, tuple)):
        return (
            isinstance(out, (list, tuple))
            and len(out) == len(exp)
            and all(_close(o, e, atol) for o, e in zip(out, exp))
        )
    if not isinstance(out, (int, float)) or not isinstance(exp, (int, float)):
        return False
    if math.isinf(out) or math.isinf(exp):
        return out == exp
    return abs(out - exp) <= atol + 1e-7 * abs(exp)


def _poly(xs: list, x: float) -> float:
    import math

    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def matches(out, exp, args: list, atol: float, entry_point: str) -> bool:
    if entry_point == "find_zero":
        return abs(_poly(*args, out)) <= atol
    if out == exp:
        return True
    tol = 1e-6 if atol == 0 and _is_floats(exp) else atol
    if tol == 0 or type(out) is not type(exp):
        return False
    return _close(out, exp, tol)


def check_outputs(fn, data: str, atol: float, entry_point: str) -> None:
    """Raise AssertionError at the first input (of those the contract allows) where `fn` does not
    return the reference output. `data`: JSON of {"inputs": [...], "outputs": [...] (tagged),
    "valid": [...]}; a large output is compared by its digest (see `_normal`)."""
    import copy
    import json

    cases = json.loads(data)
    for i, (args, expected, valid) in enumerate(zip(cases["inputs"], cases["outputs"], cases["valid"])):
        if not valid:
            continue
        out = fn(*copy.deepcopy(args))
        if isinstance(expected, dict) and "h" in expected:
            same = digest(out) == expected["h"]
        else:
            same = matches(out, decode(expected), args, atol, entry_point)
        if not same:
            raise AssertionError(f"input {i}: {repr(args)[:100]} gave {repr(out)[:100]}")
