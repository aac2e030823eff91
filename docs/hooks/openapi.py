"""mkdocs hook: the API page's reference section, generated from the service's own OpenAPI
document (``SendTime.openapi_spec``, what ``/docs.json`` serves), so the docs cannot drift
from the code. The document itself is published beside the page as ``openapi.json``."""

from __future__ import annotations

import json

MARKER = "<!-- openapi-reference -->"


def _spec() -> dict:
    from sendtime.serving.service import SendTime

    return SendTime.openapi_spec.asdict()


def _type(s: dict) -> str:
    if "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in s:
        return " or ".join(_type(x) for x in s["anyOf"] if x.get("type") != "null") + (
            " (nullable)" if any(x.get("type") == "null" for x in s["anyOf"]) else "")
    if s.get("type") == "array":
        return f"array of {_type(s.get('items', {}))}"
    t = s.get("type", "any")
    return f"{t} ({s['format']})" if "format" in s else t


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def reference(spec: dict) -> str:
    schemas = spec.get("components", {}).get("schemas", {})
    out = ["## Reference", "",
           f"Generated from the service's OpenAPI document ({spec.get('info', {}).get('title', 'sendtime')}); "
           "the raw document: [openapi.json](openapi.json).", "", "### Routes", "",
           "| method | path | summary | request | responses |", "|---|---|---|---|---|"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {})
            req = ", ".join(_type(c.get("schema", {})) for c in body.values()) or "-"
            codes = ", ".join(sorted(str(c) for c in op.get("responses", {})))
            summary = op.get("description") or op.get("summary") or ""
            out.append(f"| {method.upper()} | `{path}` | {_cell(summary.strip().splitlines()[0] if summary.strip() else '')} | {req} | {codes} |")
    out += ["", "### Schemas", ""]
    for name, s in schemas.items():
        out += [f"#### {name}", ""]
        if s.get("description"):
            out += [_cell(s["description"]), ""]
        props = s.get("properties", {})
        if props:
            required = set(s.get("required", []))
            out += ["| field | type | required | description |", "|---|---|---|---|"]
            for field, p in props.items():
                desc = p.get("description", "")
                if "examples" in p:
                    desc += f" Example: `{json.dumps(p['examples'][0])}`."
                out.append(f"| `{field}` | {_type(p)} | {'yes' if field in required else ''} | {_cell(desc.strip())} |")
            out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference(_spec()))


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "openapi.json", content=json.dumps(_spec(), indent=2)))
    return files
