"""Which worker holds a therapist's live state, and forwarding a request to it.

The therapist table is split across the workers by partition (the therapist's
inbox partition, ``partition_of``); only the worker whose *active* partition it is
holds the entry as the therapist agent last wrote it. Standby copies lag behind,
and the database holds none of it. So a request for the therapist view is answered
by that worker: asked elsewhere, a worker forwards it there and relays the answer.

Where the owner is comes from the group's partition assignment, in which every
worker states its own web address (Faust's ``canonical_url``, set from
COMM_WEB_ADVERTISED_URL): ``app.router.table_metadata``. The forwarded request is
the client's own: the same path and query, and the client's ``Authorization``,
which the owner checks as it checks every API request. Nothing reaches the table
without a valid token; Faust's own routing views (``/router/…``) stay off.

A forwarded request carries ``X-Commsvc-Forwarded-By`` and is never forwarded
again: a worker that is asked by another and is not (or no longer) the owner
answers 503, so a request cannot go round in circles while the group rebalances.
Neither can any answer be stale: while this worker's group rebalances, or its
partition is still being read back from the changelog, it answers 503 with
``Retry-After`` instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
import faust
from faust.types import TP
from yarl import URL

from streams.agents.ticks import partition_of
from streams.ops.logs import ThrottledWarning

log = logging.getLogger(__name__)

FORWARDED_BY = "X-Commsvc-Forwarded-By"
FORWARD_TIMEOUT = 5.0  # seconds the owner has to answer
# Response headers of the owner's answer that are passed back to the client.
RELAYED_HEADERS = ("WWW-Authenticate", "Retry-After")


@dataclass(frozen=True)
class Here:
    """This worker owns the partition and its state is recovered."""


@dataclass(frozen=True)
class There:
    url: str  # the owner's web address


@dataclass(frozen=True)
class Nowhere:
    """No worker can answer right now (a rebalance, a recovery); try again shortly."""

    reason: str


Owner = Here | There | Nowhere


class Ownership:
    """Who owns a therapist's partition of the table, read from Faust's assignment."""

    def __init__(self, app: faust.App, table: faust.Table, partitions: int) -> None:
        self.app = app
        self.table = table
        self.partitions = partitions

    @property
    def own_url(self) -> str:
        return str(self.app.conf.canonical_url)

    def owner_of(self, therapist_id: int) -> Owner:
        app = self.app
        partition = partition_of(therapist_id, self.partitions)
        changelog = self.table.changelog_topic.get_topic_name()
        if app.rebalancing:
            return Nowhere("the workers are rebalancing")
        if TP(changelog, partition) in app.assignor.assigned_actives():
            if not app.tables.actives_ready or app.in_recovery:
                return Nowhere("the therapist table is being recovered")
            return Here()
        for url, topics in app.router.table_metadata(self.table.name).items():
            if partition in topics.get(changelog, ()):
                if URL(url) == URL(self.own_url):  # stale: ours no longer
                    break
                return There(url)
        return Nowhere("no worker holds the therapist's partition yet")


@dataclass(frozen=True)
class Relayed:
    """The owner's answer, to pass back as it came."""

    status: int
    body: bytes
    headers: dict[str, str]


class OwnerUnreachable(Exception):
    pass


class Forwarder:
    """Sends a request on to the owner (over Faust's HTTP client, closed with the app)."""

    def __init__(self, app: faust.App, timeout: float = FORWARD_TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout
        self._warning = ThrottledWarning(log)

    async def __call__(self, owner: There, path_qs: str, authorization: str) -> Relayed:
        target = URL(owner.url).join(URL(path_qs))
        headers = {
            "Authorization": authorization,
            "Accept": "application/json",
            FORWARDED_BY: str(self.app.conf.canonical_url),
        }
        session: aiohttp.ClientSession = self.app.http_client
        try:
            async with session.get(
                target,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                body = await response.read()
                relayed = {name: response.headers[name] for name in RELAYED_HEADERS if name in response.headers}
                return Relayed(response.status, body, relayed)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._warning("api: the worker at %s did not answer a forwarded request (%s)", owner.url, _name(exc))
            raise OwnerUnreachable from None


def _name(exc: BaseException) -> str:
    return type(exc).__name__
