#!/usr/bin/env python3
"""The OBT's multicast doxm discovery, driven through aiocoap (tests/third_party.rs).

aiocoap (0.4.x) has no multicast request API: `Context.request()` to a group returns only the
first response. So the discovery goes out on plain asyncio UDP endpoints, with aiocoap's own
`Message.encode()` building the request and `Message.decode()` parsing every answer; the OBT's
unicast follow-ups (CON `GET /oic/res?rt=oic.r.doxm`, CON `GET /oic/d` at each answer's source)
then use aiocoap's normal client API, and so does the plgd client's follow-up (CON
`GET /oic/sec/doxm?if=oic.if.baseline` at the answer's source).

Output: one JSON object per line and answer on stdout:
  {"source", "family", "type", "code", "token", "mid", "content_format", "ocf_version",
   "keys", "payload", "deviceuuid", ["follow", "anchor", "href", "eps", "di", "n", "name"]}
With --first, aiocoap's request API is used instead and its one response is printed.
Diagnostics go to stderr. Exit 0 unless the script itself fails (2).

  aiocoap_discover.py --iface IF [--group G]... [--token-per-group] [--query Q]...
                      [--no-query] [--no-response N] [--wait SECS] [--follow] [--first]
"""

import argparse
import asyncio
import json
import os
import socket
import struct
import sys

import aiocoap
import cbor2
from aiocoap import optiontypes

DOXM = ["oic", "sec", "doxm"]
OCF_ACCEPT_VERSION = 2049
OCF_VERSION = 2053
OCF_CBOR = 10000


def jsonable(value):
    """cbor2's decoded payload as JSON (bytes as hex)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def source_text(addr, iface):
    host, port = addr[0], addr[1]
    if ":" in host:
        if host.startswith("fe80") and "%" not in host:
            host = f"{host}%{iface}"
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def request_message(args, token, mid):
    msg = aiocoap.Message(code=aiocoap.GET, uri_path=DOXM)
    # Set as attributes: the constructor's mtype/mid/token arguments are deprecated in 0.4.x.
    msg.mtype, msg.mid, msg.token = aiocoap.NON, mid, token
    if not args.no_query:
        msg.opt.uri_query = args.query or ["owned=FALSE"]
    msg.opt.accept = OCF_CBOR
    msg.opt.add_option(optiontypes.UintOption(OCF_ACCEPT_VERSION, 2048))
    if args.no_response is not None:
        msg.opt.no_response = args.no_response
    return msg


class Collector(asyncio.DatagramProtocol):
    def __init__(self, iface, family, answers):
        self.iface, self.family, self.answers = iface, family, answers

    def datagram_received(self, data, addr):
        try:
            msg = aiocoap.Message.decode(data)
        except Exception as e:  # noqa: BLE001 - report anything undecodable
            print(f"undecodable datagram from {addr}: {e}", file=sys.stderr)
            self.answers.append({"source": source_text(addr, self.iface), "error": str(e)})
            return
        answer = {
            "source": source_text(addr, self.iface),
            "family": self.family,
            "type": str(msg.mtype).split(".")[-1],
            "code": f"{int(msg.code) >> 5}.{int(msg.code) & 31:02d}",
            "token": msg.token.hex(),
            "mid": msg.mid,
            "content_format": None if msg.opt.content_format is None else int(msg.opt.content_format),
            "ocf_version": None,
        }
        for opt in msg.opt.option_list():
            if int(opt.number) == OCF_VERSION:
                answer["ocf_version"] = int.from_bytes(opt.encode(), "big")
        if msg.payload:
            try:
                payload = cbor2.loads(msg.payload)
                answer["keys"] = list(payload) if isinstance(payload, dict) else None
                answer["payload"] = jsonable(payload)
                if isinstance(payload, dict):
                    answer["deviceuuid"] = payload.get("deviceuuid")
            except Exception as e:  # noqa: BLE001
                answer["payload_error"] = str(e)
        self.answers.append(answer)


async def follow(ctx, answer):
    """The OBT's next steps at the answer's source, with aiocoap's request API (CON)."""
    uuid = answer.get("deviceuuid")
    base = f"coap://{answer['source']}"
    try:
        req = aiocoap.Message(code=aiocoap.GET, uri=base + "/oic/res?rt=oic.r.doxm")
        res = await asyncio.wait_for(ctx.request(req).response, 10)
        if res.code != aiocoap.CONTENT:
            return {"follow": f"/oic/res: {res.code}"}
        links = cbor2.loads(res.payload)
        if not isinstance(links, list) or len(links) != 1:
            return {"follow": f"/oic/res: want one link, got {jsonable(links)}"}
        link = links[0]
        out = {
            "anchor": link.get("anchor"),
            "href": link.get("href"),
            "rt": link.get("rt"),
            "eps": [e.get("ep") for e in link.get("eps", [])],
            "res_type": str(res.mtype).split(".")[-1],
        }
        if out["anchor"] != f"ocf://{uuid}":
            return {**out, "follow": f"anchor {out['anchor']!r} is not ocf://{uuid}"}
        if out["href"] != "/oic/sec/doxm":
            return {**out, "follow": f"href {out['href']!r}"}
        req = aiocoap.Message(code=aiocoap.GET, uri=base + "/oic/d")
        d = await asyncio.wait_for(ctx.request(req).response, 10)
        if d.code != aiocoap.CONTENT:
            return {**out, "follow": f"/oic/d: {d.code}"}
        dev = cbor2.loads(d.payload)
        out["di"], out["n"] = dev.get("di"), dev.get("n")
        out["name"] = out["n"]
        if out["di"] != uuid:
            return {**out, "follow": f"di {out['di']!r} is not {uuid}"}
        if not out["n"]:
            return {**out, "follow": "no n in /oic/d"}
        # What the plgd client sends instead: unicast GET /oic/sec/doxm?if=oic.if.baseline.
        req = aiocoap.Message(code=aiocoap.GET, uri=base + "/oic/sec/doxm?if=oic.if.baseline")
        doxm = await asyncio.wait_for(ctx.request(req).response, 10)
        if doxm.code != aiocoap.CONTENT:
            return {**out, "follow": f"/oic/sec/doxm: {doxm.code}"}
        body = cbor2.loads(doxm.payload)
        out["doxm_keys"] = list(body)
        if body.get("deviceuuid") != uuid or out["doxm_keys"][:2] != ["rt", "if"]:
            return {**out, "follow": f"/oic/sec/doxm?if=oic.if.baseline: {jsonable(body)}"}
        return {**out, "follow": "ok"}
    except Exception as e:  # noqa: BLE001 - the test reads the reason
        return {"follow": f"{type(e).__name__}: {e}"}


async def first_only(args):
    """aiocoap's request API on a group: it returns the first answer only (the quirk)."""
    ctx = await aiocoap.Context.create_client_context()
    group = args.group[0] if args.group else "ff02::158"
    host = f"[{group}%{args.iface}]" if ":" in group else group
    query = "&".join(args.query or ["owned=FALSE"])
    req = aiocoap.Message(
        code=aiocoap.GET,
        uri=f"coap://{host}/oic/sec/doxm?{query}",
        accept=OCF_CBOR,
        transport_tuning=aiocoap.Unreliable,
    )
    req.opt.add_option(optiontypes.UintOption(OCF_ACCEPT_VERSION, 2048))
    res = await asyncio.wait_for(ctx.request(req).response, args.wait + 5)
    payload = cbor2.loads(res.payload)
    remote = res.remote.sockaddr if hasattr(res.remote, "sockaddr") else None
    print(json.dumps({
        "source": source_text(remote, args.iface) if remote else str(res.remote),
        "code": str(res.code),
        "type": str(res.mtype).split(".")[-1],
        "deviceuuid": payload.get("deviceuuid"),
    }), flush=True)
    await ctx.shutdown()


async def discover(args):
    loop = asyncio.get_running_loop()
    idx = socket.if_nametoindex(args.iface)
    answers = []
    token, mid = os.urandom(8), int.from_bytes(os.urandom(2), "big")
    transports = []
    socks = {}
    for group in args.group or ["ff02::158"]:
        v6 = ":" in group
        fam = "v6" if v6 else "v4"
        if fam not in socks:
            if v6:
                s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
                s.bind(("::", 0))
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                # struct ip_mreqn: group, address, ifindex.
                mreqn = struct.pack("4s4si", bytes(4), bytes(4), idx)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                s.bind(("0.0.0.0", 0))
            s.setblocking(False)
            tr, _ = await loop.create_datagram_endpoint(
                lambda fam=fam: Collector(args.iface, fam, answers), sock=s
            )
            transports.append(tr)
            socks[fam] = tr
        # One exchange: every copy carries the same Message ID and, by default, the same token
        # (as the IoTivity-Lite OBT sends to ff02::158 and 224.0.1.187); with
        # --token-per-group a fresh token per group (as the plgd client sends to ff02::158,
        # ff03::158 and ff05::158 from one socket).
        if args.token_per_group and group != (args.group or ["ff02::158"])[0]:
            token = os.urandom(8)
        data = request_message(args, token, mid).encode()
        dest = (group, args.port, 0, idx) if v6 else (group, args.port)
        socks[fam].sendto(data, dest)
    await asyncio.sleep(args.wait)
    for tr in transports:
        tr.close()
    if args.follow:
        ctx = await aiocoap.Context.create_client_context()
        results = await asyncio.gather(
            *(follow(ctx, a) for a in answers if "deviceuuid" in a)
        )
        for a, r in zip([a for a in answers if "deviceuuid" in a], results):
            a.update(r)
        await ctx.shutdown()
    for a in answers:
        print(json.dumps(a), flush=True)
    print(f"{len(answers)} answers (token {token.hex()}, mid {mid})", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iface", required=True)
    p.add_argument("--group", action="append", help="ff02::158, 224.0.1.187, ... (repeat)")
    p.add_argument("--port", type=int, default=5683)
    p.add_argument("--query", action="append", help="one Uri-Query option (repeat)")
    p.add_argument("--no-query", action="store_true")
    p.add_argument("--no-response", type=int)
    p.add_argument("--wait", type=float, default=1.5)
    p.add_argument("--follow", action="store_true")
    p.add_argument("--token-per-group", action="store_true")
    p.add_argument("--first", action="store_true")
    args = p.parse_args()
    try:
        asyncio.run(first_only(args) if args.first else discover(args))
    except Exception as e:  # noqa: BLE001
        print(f"aiocoap_discover: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
