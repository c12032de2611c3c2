"""Deterministic data generators for both APIs, plus expectation helpers for tests.

Every record is a pure function of ``(settings.seed, day, index)``: the same call always yields the same
bytes, and nothing is stored. Exports are generated lazily, record by record, so a million-activity export
streams with flat memory.

Expectation helpers (tests compute what a correct tap must emit without re-implementing generation)::

    expected_activity_uids(settings, start, end, export_type, activity_type="all", today=None) -> set[str]
    expected_contact_emails(settings, start, end, *, country=None, state=None, is_sourced_by_people_ai=False,
                            include_existing=True, include_historical=True, today=None) -> set[str]
    expected_intent_rows(settings, feed_id, start, end, require_contact_id=False) -> int
    expected_intent_contact_ids(settings, feed_id, start, end) -> set[str]   # valid ids only

Backstory activities (vendor schema: research notes 1.3.6)
    * ``activities_per_day`` activities per activity day; type mix about 50% email, 30% meeting, 20% call.
    * ``timestamp`` is the activity time, ``ingest_timestamp`` the processing time; the ingest day is the
      activity day plus 0..3 days. Timestamps carry no offset (``2022-07-11T00:00:00``), like the vendor.
    * ``future_activity_days`` N > 0: half of the meetings are scheduled ahead, processed 1..N days *before*
      their activity day, so activities dated after today exist (the snapshot/delta hand-off case).
    * ``snapshot`` selects by activity day, ``delta`` by ingest day; an activity exists only once its ingest
      day is <= today.
    * Keys without a value are omitted, as the vendor does; ``stats`` holds only the keys that apply to the
      type; ``crm_status`` nests the matched object under the key named by ``matched_to``.

Backstory enriched contacts (vendor schema: backstory-enriched-contacts-schema.txt)
    * ``contacts_per_day`` contacts per day, the day being the day of ``last_engaged_time``.
    * ``include_existing=false`` drops contacts with a ``crm_id``; ``include_historical=false`` drops contacts
      without an ``account_crm_id``; ``is_sourced_by_people_ai=true`` keeps only sourced ones; ``country`` and
      ``state`` filter by equality.

ContactBased intent rows and enrichment: see ``intent_row`` and ``enrichment``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
from collections.abc import Iterator
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from .settings import FEED_A_ID, SandboxSettings

_M64 = (1 << 64) - 1


def _mix(seed: int, salt: int, a: int, b: int = 0) -> int:
    """64-bit hash of four integers (splitmix64 finaliser). Fast enough for a million calls per second."""
    x = (seed * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9 + a * 0x94D049BB133111EB
         + b * 0x2545F4914F6CDD1D + 0x632BE59BD9B4E019) & _M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def daterange(start: date, end: date) -> Iterator[date]:
    d = start
    while d <= end:
        yield d
        d += timedelta(days=1)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------
# Name pools
# ---------------------------------------------------------------------------------------------------------
FIRST = ["Ada", "Ben", "Chloé", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kara", "Liam",
         "Maya", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe"]
LAST = ["Adams", "Brown", "Chen", "Diaz", "Evans", "Fischer", "García", "Hughes", "Ivanova", "Jones", "Khan",
        "Lopez", "Müller", "Nakamura", "O'Brien", "Patel", "Quist", "Rossi", "Smith", "Tanaka", "Usman",
        "Vargas", "Weber", "Young", "Zhang"]
COMPANIES = [("Acme Corp", "acme.example"), ("Globex", "globex.example"), ("Initech", "initech.example"),
             ("Umbrella Health", "umbrella.example"), ("Stark Industries", "stark.example"),
             ("Wayne Enterprises", "wayne.example"), ("Hooli", "hooli.example"), ("Vandelay Imports",
             "vandelay.example"), ("Soylent", "soylent.example"), ("Tyrell Systems", "tyrell.example"),
             ('Massive "Dynamic" Ltd', "massive.example"), ("Pied Piper, Inc.", "piedpiper.example")]
TITLES = ["Account Executive", "Sales Manager", "VP, Sales", "CTO", "Head of Data", "Procurement Lead",
          "Software Engineer", "Director of Marketing", "CFO", "Operations Analyst",
          "Head of Ops\nEMEA", 'Chief "Everything" Officer']
DEPARTMENTS = ["Sales", "Engineering", "Marketing", "Finance", "Operations", "IT", "Legal"]
SENIORITIES = ["Individual Contributor", "Manager", "Director", "VP", "C-Level"]
TEAMS = [("7001", "Enterprise East"), ("7002", "Enterprise West"), ("7003", "Mid-Market"), ("7004", "SMB")]
STAGES = [("Prospecting", 1), ("Qualification", 2), ("Proposal", 3), ("Negotiation", 4), ("Closed Won", 5)]
SUBJECTS = ["Intro call follow-up", "Pricing proposal", "Re: contract redlines", "Quarterly business review",
            "Demo recap, next steps", 'Question about "Enterprise" tier', "Renewal options", "Kick-off"]
LOCATIONS = ["Zoom", "Google Meet", "HQ, Room 4.12", "Microsoft Teams", "Customer office"]
TAGS = {"email": ['"email"'], "meeting": ['"meeting"', '"meeting","external"'],
        "call": ['"call","logged_call"', '"call"']}
COUNTRIES = [("United States", ["New York", "California", "Texas", "Washington"]),
             ("United Kingdom", [None]), ("Germany", [None]), ("Canada", [None])]
TOPICS = ["data warehouse", "CRM migration", "sales intelligence", "ETL", "customer data platform",
          "revenue operations", "cloud security", "marketing automation", "AI assistants", "observability"]
INDUSTRIES = ["Software", "Healthcare", "Manufacturing", "Financial Services", "Retail", "Logistics"]
CITIES = [("Austin", "TX", "73301"), ("Boston", "MA", "02108"), ("Denver", "CO", "80202"),
          ("Seattle", "WA", "98101"), ("Chicago", "IL", "60601"), ("Miami", "FL", "33101")]


# ---------------------------------------------------------------------------------------------------------
# Backstory activities
# ---------------------------------------------------------------------------------------------------------
_SALT_ACT, _SALT_ACT2 = 11, 12


def _activity_type(h: int) -> str:
    r = h % 100
    return "email" if r < 50 else ("meeting" if r < 80 else "call")


def activity_uid(day: date, index: int) -> str:
    """Unique per (day, index): ``ACT-20260301-0000017``."""
    return f"ACT-{day.year:04d}{day.month:02d}{day.day:02d}-{index:07d}"


def iter_activity_keys(settings: SandboxSettings, start: date, end: date, export_type: str,
                       activity_type: str = "all", today: date | None = None
                       ) -> Iterator[tuple[date, int, int, str, date]]:
    """Yield ``(activity_day, index, hash, type, ingest_day)`` of the selected activities, in export order.

    Cheap (no rendering): used to count, to split into fragments and by ``expected_activity_uids``.
    """
    today = today or settings.current_day()
    seed, per_day, ahead = settings.seed, settings.activities_per_day, settings.future_activity_days
    if export_type == "snapshot":
        first, last = start, end
    else:  # activity days whose ingest day can fall in [start, end]
        first, last = start - timedelta(days=3), end + timedelta(days=ahead)
    for day in daterange(first, last):
        o = day.toordinal()
        for i in range(per_day):
            h = _mix(seed, _SALT_ACT, o, i)
            t = _activity_type(h)
            if activity_type != "all" and t != activity_type:
                continue
            ingest = _ingest_ordinal(o, h, t, ahead)
            if ingest > today.toordinal():
                continue
            if export_type == "delta" and not (start.toordinal() <= ingest <= end.toordinal()):
                continue
            yield day, i, h, t, date.fromordinal(ingest)


def _ingest_ordinal(day: int, h: int, atype: str, ahead: int) -> int:
    """Processing day of an activity: 0..3 days after it, or 1..``ahead`` days before it (a scheduled
    meeting: half of them when ``future_activity_days`` is on)."""
    if ahead and atype == "meeting" and (h >> 16) % 2:
        return day - 1 - (h >> 24) % ahead
    return day + (h >> 8) % 4


def expected_activity_uids(settings: SandboxSettings, start: date, end: date, export_type: str,
                           activity_type: str = "all", today: date | None = None) -> set[str]:
    """uids a correct export job for this window returns (``today`` defaults to the settings' today)."""
    return {activity_uid(d, i) for d, i, *_ in iter_activity_keys(settings, start, end, export_type,
                                                                   activity_type, today)}


class _ActivityPools:
    """Per-seed pools of pre-serialised JSON pieces, so one activity renders with string joins only."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"{seed}:activity-pools")
        self.internal = []
        for n in range(24):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            team = rng.choice(TEAMS)
            p: dict[str, Any] = {"type": "internal", "peopleai_id": str(1_000_000_000 + rng.randrange(10**9)),
                                 "crm_id": f"005{n:012d}", "name": f"{first} {last}",
                                 "title": rng.choice(TITLES[:6]),
                                 "email": f"{_ascii(first)}.{_ascii(last)}{n}@sandbox-corp.example",
                                 "team": {"crm_id": team[0], "name": team[1]}}
            if rng.random() < 0.7:
                p["phone"] = f"+1415555{n:04d}"
            self.internal.append(_dumps(p)[1:-1])
        self.external = []  # (json core, matched_as)
        for n in range(200):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            company, domain = rng.choice(COMPANIES)
            matched = rng.choice(["contact", "contact", "lead", None])
            p = {"type": "external", "peopleai_id": str(2_000_000_000 + rng.randrange(10**9)),
                 "name": f"{first} {last}", "email": f"{_ascii(first)}.{_ascii(last)}{n}@{domain}"}
            if matched:
                p["matched_as"] = matched
                p["crm_id"] = ("003" if matched == "contact" else "00Q") + f"{n:012d}"
            if rng.random() < 0.6:
                p["title"] = rng.choice(TITLES)
            if rng.random() < 0.4:
                p["phone"] = f"+4420794{n:05d}"
            self.external.append((_dumps(p)[1:-1], matched == "contact"))
        self.crm_status = []
        for n in range(48):
            company, _domain = COMPANIES[n % len(COMPANIES)]
            account = {"crm_id": f"001{n:012d}", "name": company}
            matched = ["none", "account", "opportunity", "lead"][n % 4]
            cs: dict[str, Any] = {"matched_to": matched, "pushed": matched != "none" and n % 3 != 0}
            if cs["pushed"]:
                cs["push_time"] = f"2026-01-{1 + n % 28:02d}T10:{n:02d}:00Z"
                cs["crm_id"] = f"00T{n:012d}"
            if matched == "account":
                if n % 5 == 0:
                    account["parent_account_crm_id"] = f"001P{n:011d}"
                    account["parent_account_name"] = company + " Holdings"
                cs["account"] = account
            elif matched == "opportunity":
                stage = STAGES[n % len(STAGES)]
                cs["opportunity"] = {"crm_id": f"006{n:012d}", "name": f"{company} - expansion",
                                     "stage_name": stage[0], "stage_rank": stage[1], "account": account}
                cs["account"] = account
            elif matched == "lead":
                cs["lead"] = {"crm_id": f"00Q{n:012d}", "name": f"{FIRST[n % 25]} {LAST[n % 25]}",
                              "title": TITLES[n % 6], "email": f"lead{n}@{COMPANIES[n % 12][1]}",
                              "lead_stage": ["New", "Working", "Nurturing"][n % 3]}
                if n % 2:
                    cs["lead"]["phone"] = f"+1212555{n:04d}"
            self.crm_status.append(_dumps(cs))
        self.campaigns = ["[]"] * 6 + [
            _dumps([{"crm_id": "701000000000001", "name": "Spring Webinar", "start_date": "2026-03-01",
                     "end_date": "2026-03-31"}]),
            _dumps([{"crm_id": "701000000000002", "name": "Field Event, Berlin", "start_date": "2026-02-10",
                     "end_date": "2026-02-12"},
                    {"crm_id": "701000000000003", "name": "ABM Q1", "start_date": "2026-01-01"}])]
        self.experimental = [
            _dumps({"internal_match_status": {"matched_to": "lead", "pushed": False,
                                              "lead": {"crm_id": "00Q000000000777", "name": "Pat Lee",
                                                       "email": "pat.lee@globex.example",
                                                       "lead_stage": "Working"}}}),
            _dumps({"internal_match_status": {"matched_to": "none", "pushed": False}})]
        self.subjects = [_dumps(s) for s in SUBJECTS]
        self.locations = [_dumps(s) for s in LOCATIONS]


def _ascii(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.lower().replace("é", "e").replace("ü", "u").replace("í", "i"))


@lru_cache(maxsize=8)
def activity_pools(seed: int) -> _ActivityPools:
    return _ActivityPools(seed)


def _ts(day_iso: str, secs: int) -> str:
    return f"{day_iso}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


def render_activity(settings: SandboxSettings, day: date, index: int, h: int, atype: str,
                    ingest_day: date) -> str:
    """One activity as a compact JSON object (no newline). Keys with no value are omitted."""
    pools = activity_pools(settings.seed)
    g = _mix(settings.seed, _SALT_ACT2, day.toordinal(), index)
    uid = activity_uid(day, index)
    day_iso = day.isoformat()
    secs = 7 * 3600 + (g % 40000)  # between 07:00 and about 18:00
    ts = _ts(day_iso, secs)
    parts = [f'"uid":"{uid}"', f'"source_id":"SRC-{uid[4:]}"', f'"type":"{atype}"', f'"timestamp":"{ts}"',
             f'"ingest_timestamp":"{_ts(ingest_day.isoformat(), (g >> 20) % 86400)}"']
    n_part = 2 + (g >> 40) % 3
    duration = 60 * (1 + (g >> 12) % 60)
    # participants: the originator is internal, the others mostly external
    internal, external, contacts = 1, 0, 0
    plist = [f'{{"role":"originator","time_spent":{duration},{pools.internal[(g >> 4) % 24]}}}']
    statuses = ("accepted", "accepted", "declined", "tentative")
    meet_status = {"accepted": 0, "declined": 0, "tentative": 0}
    for k in range(1, n_part):
        hk = g >> (8 + 5 * k)
        if hk % 5 == 0:
            core = pools.internal[(hk >> 3) % 24]
            internal += 1
        else:
            core, is_contact = pools.external[(hk >> 3) % 200]
            external += 1
            contacts += is_contact
        extra = ""
        if atype == "meeting":
            st = statuses[(hk >> 11) % 4]
            meet_status[st] += 1
            extra = f'"status":"{st}",'
        plist.append(f'{{"role":"participant","time_spent":{duration},{extra}{core}}}')
    stats = (f'"total_participants":{n_part},"internal_participants":{internal},'
             f'"external_participants":{external},"contacts_participants":{contacts}')
    direction = "outbound" if g % 3 else "inbound"
    if atype == "email":
        to_line = 1 + (g >> 50) % (n_part - 1)
        stats += f',"participants_on_to_line":{to_line},"participants_on_cc_line":{n_part - 1 - to_line}'
        parts.append(f'"subject":{pools.subjects[(g >> 24) % len(pools.subjects)]}')
        parts.append(f'"direction":"{direction}"')
        parts.append(f'"reply_received":{"true" if g % 7 < 3 else "false"}')
        if g % 4 == 0:
            parts.append(f'"in_reply_to_source_id":"SRC-{uid[4:13]}{(index + 1) % 9999999:07d}"')
        if g % 9 == 0:
            parts.append('"attachment_file_names":["proposal.pdf","pricing, v2.xlsx"]')
        parts.append('"tags":["email"]')
    elif atype == "meeting":
        stats += (f',"accepted_participants":{meet_status["accepted"]}'
                  f',"declined_participants":{meet_status["declined"]}'
                  f',"tentative_participants":{meet_status["tentative"]}')
        all_day = g % 23 == 0
        parts.append(f'"subject":{pools.subjects[(g >> 24) % len(pools.subjects)]}')
        end_ts = _ts(day_iso, min(secs + duration, 86399)) if not all_day else day_iso + "T23:59:59"
        parts.append(f'"start_time":"{ts if not all_day else day_iso + "T00:00:00"}"')
        parts.append(f'"end_time":"{end_ts}"')
        parts.append(f'"duration":{duration if not all_day else 86400}')
        parts.append(f'"all_day":{"true" if all_day else "false"}')
        parts.append(f'"location":{pools.locations[(g >> 28) % len(pools.locations)]}')
        parts.append('"status":"confirmed"' if g % 11 else '"status":"cancelled"')
        parts.append(f'"tags":[{TAGS["meeting"][g % 2]}]')
    else:
        parts.append(f'"direction":"{direction}"')
        parts.append(f'"duration":{duration}')
        parts.append(f'"outbound_phone_number":"+3314555{index % 10000:04d}"')
        parts.append(f'"tags":[{TAGS["call"][g % 2]}]')
    if g % 5 == 0:
        parts.append(f'"created":"{_ts(day_iso, max(secs - 3600, 0))}"')
    if g % 13 == 0:
        parts.append('"summary":"Discussed timeline, budget and \\"next steps\\""')
    parts.append(f'"participants":[{",".join(plist)}]')
    if settings.extra_nested_fields:
        stats += ',"bounced_participants":0'
    parts.append(f'"stats":{{{stats}}}')
    parts.append(f'"campaigns":{pools.campaigns[(g >> 33) % 8]}')
    parts.append(f'"crm_status":{pools.crm_status[(g >> 36) % 48]}')
    if g % 10 == 0:
        parts.append(f'"experimental":{pools.experimental[(g >> 45) % 2]}')
    elif settings.extra_nested_fields:
        parts.append('"experimental":null')
    if settings.extra_activity_fields:
        parts.append(f'"sentiment":"{("positive", "neutral", "negative")[g % 3]}"')
    return "{" + ",".join(parts) + "}"


def iter_activity_lines(settings: SandboxSettings, start: date, end: date, export_type: str,
                        activity_type: str = "all", today: date | None = None,
                        skip: int = 0, limit: int | None = None) -> Iterator[str]:
    """JSON Lines of an export (each line ends with ``\\n``); ``skip``/``limit`` select a fragment."""
    n = 0
    taken = 0
    for day, i, h, t, ingest in iter_activity_keys(settings, start, end, export_type, activity_type, today):
        if n < skip:
            n += 1
            continue
        if limit is not None and taken >= limit:
            return
        taken += 1
        yield render_activity(settings, day, i, h, t, ingest) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Backstory enriched contacts
# ---------------------------------------------------------------------------------------------------------
CONTACT_FIELDS = [
    "first_name", "last_name", "email", "phone", "job_title", "department", "seniority", "country", "state",
    "account_name", "account_type", "account_domain", "account_crm_id", "source_peopleai_id",
    "response_activity_id", "source_email", "from_cc", "total_inbound", "total_inbound_30d", "total_outbound",
    "total_outbound_30d", "total_meetings", "total_meetings_30d", "total_time_spent", "total_time_spent_30d",
    "first_inbound_time", "last_inbound_time", "first_outbound_time", "last_outbound_time",
    "last_engaged_time", "first_upcoming_meeting_time", "first_engaged_time", "engagement_level",
    "inbound_outbound_ratio", "received_reply", "upcoming_meeting", "total_emails", "total_emails_30d",
    "is_sourced_by_people_ai", "crm_id"]


def _zts(d: date, secs: int) -> str:
    return f"{d.isoformat()}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}Z"


def contact_record(settings: SandboxSettings, day: date, index: int) -> dict[str, Any]:
    """One enriched contact; ``None`` values are omitted in JSON and empty cells in CSV."""
    rng = random.Random(f"{settings.seed}:contact:{day.isoformat()}:{index}")
    first, last = rng.choice(FIRST), rng.choice(LAST)
    company, domain = rng.choice(COMPANIES)
    country, states = rng.choice(COUNTRIES)
    inbound, outbound = rng.randrange(0, 40), rng.randrange(0, 40)
    in30, out30 = min(inbound, rng.randrange(0, 10)), min(outbound, rng.randrange(0, 10))
    meetings = rng.randrange(0, 12)
    first_engaged = day - timedelta(days=rng.randrange(0, 400))
    upcoming = rng.random() < 0.3
    has_account = rng.random() < 0.8
    rec: dict[str, Any] = {
        "first_name": first, "last_name": last,
        "email": f"{_ascii(first)}.{_ascii(last)}.{day:%Y%m%d}.{index:04d}@{domain}",
        "phone": f"+1 (555) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}" if rng.random() < 0.6
        else None,
        "job_title": rng.choice(TITLES), "department": rng.choice(DEPARTMENTS),
        "seniority": rng.choice(SENIORITIES), "country": country, "state": rng.choice(states),
        "account_name": company if has_account else None,
        "account_type": rng.choice(["Customer", "Prospect", "Partner"]) if has_account else None,
        "account_domain": domain.split(".")[0] if has_account else None,
        "account_crm_id": f"001{rng.randrange(10**12):012d}" if has_account else None,
        "source_peopleai_id": str(1_000_000_000 + rng.randrange(10**9)),
        "response_activity_id": f"SRC-{first_engaged:%Y%m%d}-{rng.randrange(10**7):07d}" if inbound else None,
        "source_email": f"rep{rng.randrange(24)}@sandbox-corp.example",
        "from_cc": rng.random() < 0.25,
        "total_inbound": inbound, "total_inbound_30d": in30,
        "total_outbound": outbound, "total_outbound_30d": out30,
        "total_meetings": meetings, "total_meetings_30d": min(meetings, rng.randrange(0, 4)),
        "total_time_spent": rng.randrange(0, 50000), "total_time_spent_30d": rng.randrange(0, 5000),
        "first_inbound_time": _zts(first_engaged, rng.randrange(86400)) if inbound else None,
        "last_inbound_time": _zts(day, rng.randrange(86400)) if inbound else None,
        "first_outbound_time": _zts(first_engaged, rng.randrange(86400)) if outbound else None,
        "last_outbound_time": _zts(day - timedelta(days=rng.randrange(0, 5)), rng.randrange(86400))
        if outbound else None,
        "last_engaged_time": _zts(day, rng.randrange(86400)),
        "first_upcoming_meeting_time": _zts(day + timedelta(days=rng.randrange(1, 30)), 36000)
        if upcoming else None,
        "first_engaged_time": _zts(first_engaged, rng.randrange(86400)),
        "engagement_level": rng.randrange(0, 101),
        "inbound_outbound_ratio": round(inbound / outbound, 4) if outbound else None,
        "received_reply": inbound > 0,
        "upcoming_meeting": upcoming,
        "total_emails": inbound + outbound, "total_emails_30d": in30 + out30,
        "is_sourced_by_people_ai": rng.random() < 0.5,
        "crm_id": (f"003{rng.randrange(10**12):012d}" if rng.random() < 0.5 else None),
    }
    return rec


def contact_matches(rec: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Request filters of POST /pull/v1/export/contacts/jobs (vendor doc S7)."""
    if not filters.get("include_existing", True) and rec["crm_id"]:
        return False
    if not filters.get("include_historical", True) and not rec["account_crm_id"]:
        return False
    if filters.get("is_sourced_by_people_ai") and not rec["is_sourced_by_people_ai"]:
        return False
    if filters.get("country") and rec["country"] != filters["country"]:
        return False
    return not (filters.get("state") and rec["state"] != filters["state"])


def iter_contacts(settings: SandboxSettings, start: date, end: date, filters: dict[str, Any],
                  today: date | None = None) -> Iterator[dict[str, Any]]:
    today = today or settings.current_day()
    for day in daterange(start, min(end, today)):
        for i in range(settings.contacts_per_day):
            rec = contact_record(settings, day, i)
            if contact_matches(rec, filters):
                yield rec


def expected_contact_emails(settings: SandboxSettings, start: date, end: date, *, today: date | None = None,
                            **filters: Any) -> set[str]:
    """Emails a correct contacts export with these filters returns (filters use the request's names)."""
    return {r["email"] for r in iter_contacts(settings, start, end, filters, today)}


def contact_json(rec: dict[str, Any]) -> str:
    return _dumps({k: v for k, v in rec.items() if v is not None})


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def contact_csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(CONTACT_FIELDS)
    return buf.getvalue()


def contact_csv_row(rec: dict[str, Any]) -> str:
    """One CSV record (RFC 4180 quoting, CRLF); fields may contain commas, quotes and newlines."""
    buf = io.StringIO()
    csv.writer(buf).writerow([_csv_cell(rec[k]) for k in CONTACT_FIELDS])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# ContactBased: people, intent rows, enrichment
# ---------------------------------------------------------------------------------------------------------
CONTACT_ID_RE = re.compile(r"^id_[0-9a-f]{16}$")
LEGACY_ID_RE = re.compile(r"^cb_[0-9A-Za-z]+$")


def is_valid_contact_id(cid: Any) -> bool:
    """Documented: ``id_`` + 16 lowercase hex; legacy ``cb_`` tokens are still accepted on input."""
    return isinstance(cid, str) and bool(CONTACT_ID_RE.match(cid) or LEGACY_ID_RE.match(cid))


def person_contact_id(seed: int, p: int) -> str:
    """The person's public id: ~93% ``id_<16 hex>``, ~5% legacy ``cb_<12 hex>``, ~2% malformed."""
    digest = hashlib.sha256(f"{seed}:person:{p}".encode()).hexdigest()
    r = int(digest[-4:], 16) % 100
    if r < 5:
        return "cb_" + digest[:12]
    if r < 7:
        return "id_" + digest[:6].upper() + "XYZ"
    return "id_" + digest[:16]


def canonical_contact_id(settings: SandboxSettings, cid: str) -> str:
    """The documented ``id_`` form of a person's legacy ``cb_`` id (its own id otherwise)."""
    p = _people_index(settings.seed, settings.contact_population).get(cid)
    if p is None or not LEGACY_ID_RE.match(cid):
        return cid
    return "id_" + hashlib.sha256(f"{settings.seed}:person:{p}".encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _people_index(seed: int, population: int) -> dict[str, int]:
    return {person_contact_id(seed, p): p for p in range(population)}


def person(seed: int, p: int) -> dict[str, Any]:
    """Stable attributes of person ``p`` (the same person appears on many rows, days and feeds)."""
    rng = random.Random(f"{seed}:person-attrs:{p}")
    company, domain = COMPANIES[p % len(COMPANIES)]
    city, st, zip_code = rng.choice(CITIES)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "first_name": first, "last_name": last, "address": f"{rng.randrange(1, 9999)} {rng.choice(LAST)} St",
        "city": city, "state": st, "zip": zip_code, "gender": rng.choice(["F", "M", "U"]),
        "age_range": rng.choice(["25-34", "35-44", "45-54", "55-64"]),
        "income_range": rng.choice(["$50k-$75k", "$75k-$100k", "$100k-$150k", "$150k+"]),
        "net_worth": rng.choice(["$100k-$250k", "$250k-$500k", "$500k-$1M", "$1M+"]),
        "domain": domain, "company_name": company,
        "company_description": f"{company} builds {rng.choice(TOPICS)} products, for teams of all sizes.",
        "industry": INDUSTRIES[p % len(INDUSTRIES)], "title": rng.choice(TITLES[:10]),
        "linkedin_url": f"https://www.linkedin.com/in/{_ascii(first)}-{_ascii(last)}-{p}",
        "department": rng.choice(DEPARTMENTS),
        "company_size": rng.choice(["1-10", "11-50", "51-200", "201-1000", "1000+"]),
        "company_revenue": rng.choice(["<$1M", "$1M-$10M", "$10M-$100M", "$100M+"]),
        "email": f"{_ascii(first)}.{_ascii(last)}{p}@{domain}",
    }


def feed_key(feed_id: str) -> int:
    return 1 if feed_id == FEED_A_ID else 2


def feed_rows_per_day(settings: SandboxSettings, feed_id: str) -> int:
    return settings.feed_a_rows_per_day if feed_id == FEED_A_ID else settings.feed_b_rows_per_day


def intent_row(settings: SandboxSettings, feed_id: str, day: date, j: int, *, get_pii: bool = False,
               include_business_info: bool = False) -> dict[str, Any]:
    """Row ``j`` of ``day`` in a feed. ``contact_id`` is null on ~10% of rows.

    PII fields only with ``get_pii``; business-info fields only with ``include_business_info``.
    """
    rng = random.Random(f"{settings.seed}:intent:{feed_key(feed_id)}:{day.isoformat()}:{j}")
    p = rng.randrange(settings.contact_population)
    who = person(settings.seed, p)
    topics = rng.sample(TOPICS, rng.randrange(1, 5))
    row: dict[str, Any] = {
        "contact_id": person_contact_id(settings.seed, p) if rng.random() >= 0.10 else None,
        "domain": who["domain"], "company_name": who["company_name"],
        "company_description": who["company_description"], "industry": who["industry"],
        "title": who["title"], "topics": topics, "num_topics": len(topics),
        "similarity": round(0.5 + rng.random() / 2, 4), "signal_date": day.isoformat(),
    }
    if get_pii:
        for k in ("first_name", "last_name", "address", "city", "state", "zip", "gender", "age_range",
                  "income_range", "net_worth"):
            row[k] = who[k]
    if include_business_info:
        row.update(linkedin_url=who["linkedin_url"], job_title=who["title"], department=who["department"],
                   company_size=who["company_size"], company_revenue=who["company_revenue"])
    if settings.extra_row_fields:
        row["buying_stage"] = rng.choice(["awareness", "consideration", "decision"])
    return row


def iter_intent_rows(settings: SandboxSettings, feed_id: str, start: date, end: date, *,
                     require_contact_id: bool = False, get_pii: bool = False,
                     include_business_info: bool = False) -> Iterator[dict[str, Any]]:
    for day in daterange(start, end):
        for j in range(feed_rows_per_day(settings, feed_id)):
            row = intent_row(settings, feed_id, day, j, get_pii=get_pii,
                             include_business_info=include_business_info)
            if require_contact_id and not is_valid_contact_id(row["contact_id"]):
                continue
            yield row


def expected_intent_rows(settings: SandboxSettings, feed_id: str, start: date, end: date,
                         require_contact_id: bool = False) -> int:
    """Rows of a feed window (before ``max_rows``)."""
    return sum(1 for _ in iter_intent_rows(settings, feed_id, start, end, require_contact_id=require_contact_id))


def expected_intent_contact_ids(settings: SandboxSettings, feed_id: str, start: date, end: date) -> set[str]:
    """Distinct valid contact_ids of a feed window (what the tap should send to enrichment)."""
    return {r["contact_id"] for r in iter_intent_rows(settings, feed_id, start, end, require_contact_id=True)}


def enrichment(settings: SandboxSettings, contact_id: str) -> dict[str, Any]:
    """Enrichment sections of a contact_id: ``{"pii": dict|None, "emails": list|None, "phones": list|None}``.

    ``None`` = no record for that section. Unknown ids and ~20% of known people have no data at all; an
    ``emails``/``phones`` record may exist with no entries (``[]``).
    """
    p = _people_index(settings.seed, settings.contact_population).get(contact_id)
    if p is None:
        return {"pii": None, "emails": None, "phones": None}
    rng = random.Random(f"{settings.seed}:enrich:{p}")
    if rng.random() < 0.20:
        return {"pii": None, "emails": None, "phones": None}
    who = person(settings.seed, p)
    pii = ({k: who[k] for k in ("first_name", "last_name", "address", "city", "state", "zip", "gender",
                                "age_range")} if rng.random() < 0.85 else None)
    if pii is not None and settings.extra_nested_fields:
        pii.update(street2=f"Suite {100 + p % 900}", county=f"{who['city']} County")
    emails = None
    if rng.random() < 0.8:
        emails = []
        if rng.random() >= 0.15:
            addrs = [(who["email"], "business")]
            if rng.random() < 0.5:
                addrs.append((f"{_ascii(who['first_name'])}{p}@mail.example", "personal"))
            for addr, kind in addrs:
                emails.append({"email": addr, "md5": hashlib.md5(addr.lower().encode()).hexdigest(),
                               "sha256": hashlib.sha256(addr.lower().encode()).hexdigest(), "type": kind,
                               "first_seen": f"2024-{1 + p % 12:02d}-01", "last_seen": "2026-01-15"})
    phones = None
    if rng.random() < 0.7:
        phones = []
        if rng.random() >= 0.2:
            phones.append({"phone": f"+1{2000000000 + p * 7919 % 7999999999}",
                           "type": rng.choice(["mobile", "landline", "voip"]),
                           "first_seen": f"2023-{1 + p % 12:02d}-15", "last_seen": "2026-02-01"})
    return {"pii": pii, "emails": emails, "phones": phones}


def people_with_enrichment(settings: SandboxSettings) -> list[str]:
    """Valid contact_ids that have at least one enrichment section (handy for tests)."""
    return [cid for cid in _people_index(settings.seed, settings.contact_population)
            if is_valid_contact_id(cid) and any(v is not None for v in enrichment(settings, cid).values())]
