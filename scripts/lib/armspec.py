"""The request shapes ARM accepts, read from Microsoft's Python management SDK.

The ARM simulator (agent/testkit/src/armsim/spec.rs) refuses request bodies
that do not conform to these. Nothing here is typed by hand: every model, JSON
name, type, read-only and required flag and enum comes from the model classes
of azure-mgmt-compute, which Microsoft generates from the REST specs
(Azure/azure-rest-api-specs). Their `_attribute_map` gives each attribute's
JSON path (`properties.storageProfile`: nested in `properties`) and type,
`_validation` its read-only and required flags and bounds, and the type hints
of `__init__` the enum of a string.

Usage: python armspec.py OUT.json ROOT_MODEL...
Writes {"sdk": {...}, "models": {Name: {"props": {json: prop}}}} where a prop is
{"type": T, "readonly"?, "required"?, "enum"?: [...], "enum_name"?, "min"?, "max"?,
"max_length"?, "props"?: {...}} and T is "str", "int", "float", "bool",
"date", "object" (any JSON), "[T]" (list), "{T}" (string-keyed map), a model
name, or "nested" (a JSON object made by flattening, whose members are in
"props").
"""

import enum
import importlib.metadata
import inspect
import json
import re
import sys

import azure.mgmt.compute.models as models

PRIMITIVE = {
    "str": "str",
    "int": "int",
    "long": "int",
    "float": "float",
    "bool": "bool",
    "iso-8601": "date",
    "rfc-1123": "date",
    "duration": "str",
    "date": "date",
    "bytearray": "str",
    "base64": "str",
    "object": "object",
}


def split_key(key):
    """JSON path of a flattened key: 'properties.a\\.b' -> ['properties', 'a.b']."""
    parts = re.split(r"(?<!\\)\.", key)
    return [p.replace("\\.", ".") for p in parts]


def enums_of(cls):
    """Python attribute name -> (enum name, values), from __init__'s type hints."""
    out = {}
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return out
    for name, p in sig.parameters.items():
        for ref in re.findall(r"_models\.(\w+)", str(p.annotation)):
            e = getattr(models, ref, None)
            if inspect.isclass(e) and issubclass(e, enum.Enum):
                out[name] = (ref, [m.value for m in e])
    return out


def convert(t, want):
    """SDK type string -> our type string; queues referenced models."""
    if t.startswith("[") and t.endswith("]"):
        return "[" + convert(t[1:-1], want) + "]"
    if t.startswith("{") and t.endswith("}"):
        return "{" + convert(t[1:-1], want) + "}"
    if t in PRIMITIVE:
        return PRIMITIVE[t]
    if hasattr(models, t):
        want.append(t)
        return t
    return "object"


def model(cls, want):
    enums = enums_of(cls)
    validation = getattr(cls, "_validation", {})
    props = {}
    for attr, m in cls._attribute_map.items():
        path = split_key(m["key"])
        node = props
        for p in path[:-1]:
            node = node.setdefault(p, {"type": "nested", "props": {}})["props"]
        prop = {"type": convert(m["type"], want), "attr": attr}
        v = validation.get(attr, {})
        for k_sdk, k in [("readonly", "readonly"), ("required", "required"), ("constant", "constant")]:
            if v.get(k_sdk):
                prop[k] = True
        for k_sdk, k in [("minimum", "min"), ("maximum", "max"), ("max_length", "max_length"), ("min_length", "min_length")]:
            if k_sdk in v:
                prop[k] = v[k_sdk]
        if attr in enums:
            prop["enum_name"], prop["enum"] = enums[attr]
        node[path[-1]] = prop
    return {"props": props}


def main():
    out, roots = sys.argv[1], sys.argv[2:]
    want, done = list(roots), {}
    while want:
        name = want.pop()
        if name in done:
            continue
        done[name] = model(getattr(models, name), want)
    doc = {
        "sdk": {
            "package": "azure-mgmt-compute",
            "version": importlib.metadata.version("azure-mgmt-compute"),
        },
        "roots": roots,
        "models": done,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
