"""Facts as people read them: sizes in GiB, times as dates, the fullest filesystem by the
same "used %" that `facts` prints (the mount assets' used_pct, as df counts it)."""

from datetime import UTC, datetime

from cmdb.assets.choices import AssetKindChoices
from cmdb.assets.models import Asset

GIB = 2**30


def gib(value) -> str:
    """Bytes as "12.0 GiB" (or MiB below one GiB); "" for nothing known."""
    if value in (None, ""):
        return ""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if value >= GIB:
        return f"{value / GIB:.1f} GiB"
    return f"{value / 2**20:.0f} MiB"


def when(value) -> str:
    """A Unix time (boot_time) as a UTC date; other values as they are."""
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)


def fullest_mounts(host_ids) -> dict[int, tuple[str, float]]:
    """Per host, its fullest mount and that mount's used % (what `facts` shows for it)."""
    fullest: dict[int, tuple[str, float]] = {}
    rows = Asset.objects.filter(host_id__in=list(host_ids), kind=AssetKindChoices.MOUNT)
    for host_id, key, metrics in rows.values_list("host_id", "key", "metrics"):
        used = (metrics or {}).get("used_pct")
        if used is None:
            continue
        if host_id not in fullest or used > fullest[host_id][1]:
            fullest[host_id] = (key, float(used))
    return fullest


#: Asset data keys shown as sizes or dates in the host page's tables.
SIZE_KEYS = ("bytes", "size")
TIME_KEYS = ("boot_time", "time", "_at")


def cell(key: str, value) -> str:
    """One value of an asset's data or metrics, readable."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    if isinstance(value, (int, float)) and any(k in key for k in SIZE_KEYS):
        return gib(value)
    if isinstance(value, (int, float)) and any(key.endswith(k) or key == k for k in TIME_KEYS):
        return when(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def heading(key: str) -> str:
    """A data key as a column heading: "size_bytes" is "size" (its cells say GiB)."""
    for suffix, instead in (("_bytes", ""), ("_pct", " %"), ("_mbps", " (Mb/s)")):
        if key.endswith(suffix):
            key = key[: -len(suffix)] + instead
    return key.replace("_", " ")
