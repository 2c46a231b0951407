"""Validates OCSF events (NDJSON, one per line) against the published OCSF schema.

The schema is the schema server's own export of the version the events name (`metadata.version`),
as the pinned `ocsf-json-schema` package ships it; that package also turns a class, with the
profiles an event declares, into a JSON Schema (draft 2020-12): required attributes, types and
their patterns and ranges, enum values, `at_least_one`/`just_one` constraints, and attributes of
undeclared profiles refused as unknown. On top of that, rules the JSON Schema cannot say, read
from the same export: a declared profile must be one the class takes, `type_uid` is
`class_uid * 100 + activity_id`, and an enum's caption attribute (`activity_name`, `status`, ...)
names the caption of its value unless the value is Other (99).

Usage: ocsf_validate.py FILE...  Exit 0 when every event is valid; 1 with every problem listed.
"""

import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

OTHER = 99


class Checker:
    def __init__(self, version):
        self.export = get_ocsf_schema(version=version)
        self.schemas = OcsfJsonSchemaEmbedded(self.export)
        self.validators = {}

    def validator(self, class_name, profiles):
        key = (class_name, tuple(sorted(profiles)))
        if key not in self.validators:
            schema = self.schemas.get_class_schema(class_name, list(profiles))
            self.validators[key] = jsonschema.Draft202012Validator(schema)
        return self.validators[key]

    def problems(self, event):
        class_uid = event.get("class_uid")
        try:
            class_name = self.schemas.lookup_class_name_from_uid(class_uid)
        except (ValueError, TypeError):
            return [f"class_uid {class_uid!r} is no class of OCSF {self.export['version']}"]
        cls = self.export["classes"][class_name]
        profiles = (event.get("metadata") or {}).get("profiles") or []
        found = [f"profile {p!r} is not one the {class_name} class takes"
                 for p in profiles if p not in cls.get("profiles", [])]
        if found:
            return found
        for error in self.validator(class_name, profiles).iter_errors(event):
            path = "/".join(str(p) for p in error.absolute_path) or "(event)"
            found.append(f"{path}: {error.message[:300]}")
        activity = event.get("activity_id")
        if isinstance(class_uid, int) and isinstance(activity, int):
            if event.get("type_uid") != class_uid * 100 + activity:
                found.append(f"type_uid {event.get('type_uid')} is not class_uid * 100 + activity_id")
        found.extend(self.sibling_problems(event, cls["attributes"], ""))
        return found

    def sibling_problems(self, value, attributes, where):
        """Enum captions, in the event and in every object within it."""
        found = []
        for name, attribute in attributes.items():
            if name not in value:
                continue
            item = value[name]
            if attribute.get("type") == "object_t":
                nested = self.export["objects"].get(attribute.get("object_type"), {})
                items = item if isinstance(item, list) else [item]
                for one in (x for x in items if isinstance(x, dict)):
                    found.extend(self.sibling_problems(one, nested.get("attributes", {}), f"{where}{name}/"))
                continue
            sibling, enum = attribute.get("sibling"), attribute.get("enum")
            if not sibling or not enum or sibling not in value or item == OTHER:
                continue
            if "sibling_convention" in attribute.get("suppress_checks", []) and item != 0:
                # The schema lets this value's caption differ; only Unknown is fixed.
                continue
            caption = (enum.get(str(item)) or {}).get("caption")
            if caption is not None and value[sibling] != caption:
                found.append(f"{where}{sibling}: {value[sibling]!r} is not {caption!r}, the caption of {name} {item}")
        return found


def main(paths):
    checkers = {}
    bad = total = 0
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                total += 1
                event = None
                try:
                    event = json.loads(line)
                    version = event["metadata"]["version"]
                    checker = checkers.setdefault(version, Checker(version))
                    problems = checker.problems(event)
                except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
                    problems = [f"not an OCSF event of a packaged schema version: {e!r}"]
                if problems:
                    bad += 1
                    kind = ((event.get("unmapped") or {}).get("killswitch") or {}).get("event", {}).get("type", "?") \
                        if isinstance(event, dict) else "?"
                    for problem in problems:
                        print(f"{path}:{number} ({kind}): {problem}")
    print(f"ocsf-check: {total - bad} of {total} events valid")
    return 1 if bad or not total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
