"""Counts per measurement and field in a central InfluxDB and in VictoriaMetrics after a `vmctl
influx` copy (playbooks/migrate-to-victoriametrics.yml; run on the VictoriaMetrics host).

Arguments: a file of KEY=value lines (INFLUX_URL, INFLUX_USERNAME, INFLUX_PASSWORD, DATABASE,
RETENTION_POLICY, VM_URL, START, END: RFC 3339 or empty). Prints one JSON object: per
measurement and field its type, the InfluxDB count, the VictoriaMetrics count (numeric and boolean
fields; strings cannot be copied: counted, never compared) and whether they differ."""

from __future__ import annotations

import base64
import datetime
import json
import sys
import urllib.parse
import urllib.request


def settings(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def influx(conf: dict[str, str], q: str) -> list[dict]:
    request = urllib.request.Request(
        conf["INFLUX_URL"].rstrip("/") + "/query",
        data=urllib.parse.urlencode({"q": q, "db": conf["DATABASE"], "epoch": "ms"}).encode())
    token = base64.b64encode(f"{conf['INFLUX_USERNAME']}:{conf['INFLUX_PASSWORD']}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(request, timeout=600) as response:
        result = json.loads(response.read())["results"][0]
    if "error" in result:
        raise SystemExit(f"InfluxDB: {result['error']}: {q}")
    rows = []
    for series in result.get("series", []):
        for values in series.get("values") or []:
            rows.append({"_name": series["name"], **dict(zip(series["columns"], values, strict=True))})
    return rows


def vm_count(conf: dict[str, str], name: str, start_ms: int, end_ms: int) -> int:
    """Samples of every series named `name` (of this database's label) in [start, end], on the
    query API without its cache and latency offset (nocache), deduplicated as VictoriaMetrics keeps them."""
    window = max(1, -(-(end_ms - start_ms + 1) // 1000))  # whole seconds, the window (t-w, t] covers start
    selector = json.dumps(name)
    query = f'sum(count_over_time({{__name__={selector},db={json.dumps(conf["DATABASE"])}}}[{window}s]))'
    params = urllib.parse.urlencode({"query": query, "time": f"{end_ms / 1000:.3f}", "nocache": "1"})
    with urllib.request.urlopen(f"{conf['VM_URL']}/api/v1/query?{params}", timeout=600) as response:
        result = json.loads(response.read())["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def rfc3339_ms(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def main() -> None:
    conf = settings(sys.argv[1])
    rp = conf.get("RETENTION_POLICY") or "autogen"
    where = []
    if conf.get("START"):
        where.append(f"time >= '{conf['START']}'")
    if conf.get("END"):
        where.append(f"time <= '{conf['END']}'")
    condition = (" WHERE " + " AND ".join(where)) if where else ""
    urllib.request.urlopen(conf["VM_URL"] + "/internal/force_flush", timeout=60).read()
    keys = influx(conf, f'SHOW FIELD KEYS ON "{conf["DATABASE"]}"')
    types = {(r["_name"], r["fieldKey"]): r["fieldType"] for r in keys}
    out = []
    for measurement in sorted({m for m, _ in types}):
        source = f'"{conf["DATABASE"]}"."{rp}"."{measurement}"'
        counts = influx(conf, f"SELECT count(*) FROM {source}{condition}")
        if not counts:
            continue
        first = influx(conf, f"SELECT * FROM {source}{condition} ORDER BY time ASC LIMIT 1")[0]["time"]
        last = influx(conf, f"SELECT * FROM {source}{condition} ORDER BY time DESC LIMIT 1")[0]["time"]
        start_ms = rfc3339_ms(conf["START"]) if conf.get("START") else first
        end_ms = rfc3339_ms(conf["END"]) if conf.get("END") else last
        for (m, field), kind in sorted(types.items()):
            if m != measurement:
                continue
            in_influx = int(counts[0].get(f"count_{field}") or 0)
            row = {"measurement": m, "field": field, "type": kind, "influxdb": in_influx}
            if kind == "string":
                row.update(victoriametrics=None, differs=False)  # cannot be kept: counted, not copied
            else:
                in_vm = vm_count(conf, f"{m}_{field}", start_ms, end_ms)
                row.update(victoriametrics=in_vm, differs=in_vm != in_influx)
            out.append(row)
    # The source's field values in the window: 0 is an empty source, which the playbook refuses unless
    # told (a wrong database, retention policy or window copies nothing and compares equal).
    json.dump({"fields": out, "differences": [r for r in out if r["differs"]],
               "values": sum(r["influxdb"] for r in out),
               "strings_not_copied": sum(r["influxdb"] for r in out if r["type"] == "string")}, sys.stdout)


if __name__ == "__main__":
    main()
