#!/usr/bin/env python3
"""Derive the field table of the OMS specification (the vendor's XML, one file per service)
into crates/protocol/spec/mom-fields.json: for every struct its properties, and for every
method its arguments, each with type and required flag.

Usage: tools/derive-spec.py <mom-spec directory> > crates/protocol/spec/mom-fields.json

The protocol tests read the derived table, so the project builds and tests without the XML.
"""
import json
import pathlib
import sys
import xml.etree.ElementTree as ET

NS = {"s": "https://magento.com/open-specification"}


def fields(node, tag):
    out = {}
    for prop in node.findall(f"s:{tag}", NS):
        out[prop.get("name")] = {
            "type": (prop.findtext("s:type", default="", namespaces=NS) or "").strip(),
            "required": (prop.findtext("s:required", default="false", namespaces=NS) or "").strip() == "true",
        }
    return out


def main(root):
    structs, methods, enums = {}, {}, {}
    for path in sorted(pathlib.Path(root).rglob("*.xml")):
        tree = ET.parse(path)
        for module in tree.getroot().findall("s:module", NS):
            mname = module.get("name")
            for struct in module.findall("s:struct", NS):
                props = struct.find("s:properties", NS)
                structs[f"{mname}.{struct.get('name')}"] = fields(props, "property") if props is not None else {}
            for enum in module.findall("s:enum", NS):
                enums[f"{mname}.{enum.get('name')}"] = [v.text.strip() for v in enum.findall("s:value", NS)]
            for service in module.findall("s:service", NS):
                for kind in ("command", "event", "query"):
                    for method in service.findall(f"s:{kind}", NS):
                        args = method.find("s:arguments", NS)
                        methods[f"{mname}.{service.get('name')}.{method.get('name')}"] = {
                            "kind": kind,
                            "arguments": fields(args, "argument") if args is not None else {},
                        }
    json.dump({"structs": structs, "methods": methods, "enums": enums}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
