#!/usr/bin/env node
// The OBT's multicast doxm discovery, driven through node-coap (npm `coap`), for
// tests/third_party.rs. node-coap sends the group request itself (`multicast: true`, which
// forces NON) and emits one 'response' per answer until `multicastTimeout`; with --follow, each
// answer's source then gets node-coap unicast CON requests: GET /oic/res?rt=oic.r.doxm and
// GET /oic/d.
//
// node-coap is found through NODE_PATH (the test sets NODE_PATH=$DOXM_GATE_CLIENTS/node_modules,
// default /opt/doxm-gate-clients/node_modules, where .ci/install-clients puts it).
//
//   node_discover.js --iface IF [--group G] [--query Q] [--wait SECS] [--follow]
//
// Output: one JSON object per answer and line on stdout:
//   {"source","code","type","token","content_format","ocf_version","keys","deviceuuid"
//    [,"follow","anchor","eps","di","n"]}
// A summary goes to stderr. Exit 0, or 2 when the script itself fails.
'use strict';

const dgram = require('dgram');
const os = require('os');
const coap = require('coap');

function parseArgs(argv) {
  const args = { group: 'ff02::158', query: 'owned=FALSE', wait: 1.5, follow: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--follow') args.follow = true;
    else if (['--iface', '--group', '--query', '--wait'].includes(a)) args[a.slice(2)] = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  if (!args.iface) throw new Error('--iface is required');
  args.wait = Number(args.wait);
  return args;
}

// A minimal CBOR decoder: what OCF payloads use (ints, byte and text strings, arrays and maps,
// definite or indefinite, booleans, null). Maps keep their key order.
function cborDecode(buf) {
  let pos = 0;
  function length(info) {
    if (info < 24) return info;
    if (info === 24) return buf.readUInt8(pos++);
    if (info === 25) { const v = buf.readUInt16BE(pos); pos += 2; return v; }
    if (info === 26) { const v = buf.readUInt32BE(pos); pos += 4; return v; }
    if (info === 27) { const v = Number(buf.readBigUInt64BE(pos)); pos += 8; return v; }
    if (info === 31) return -1;
    throw new Error(`bad CBOR length ${info}`);
  }
  function item() {
    const ib = buf.readUInt8(pos++);
    const major = ib >> 5;
    const n = length(ib & 31);
    switch (major) {
      case 0: return n;
      case 1: return -1 - n;
      case 2: case 3: {
        if (n < 0) throw new Error('indefinite strings are not supported');
        const s = buf.subarray(pos, pos + n); pos += n;
        return major === 3 ? s.toString('utf8') : s.toString('hex');
      }
      case 4: {
        const out = [];
        if (n < 0) { while (buf[pos] !== 0xff) out.push(item()); pos++; } else for (let i = 0; i < n; i++) out.push(item());
        return out;
      }
      case 5: {
        const out = new Map();
        const pair = () => { const k = item(); out.set(k, item()); };
        if (n < 0) { while (buf[pos] !== 0xff) pair(); pos++; } else for (let i = 0; i < n; i++) pair();
        return out;
      }
      case 7:
        if ((ib & 31) === 20) return false;
        if ((ib & 31) === 21) return true;
        if ((ib & 31) === 22) return null;
        throw new Error(`unsupported simple value ${ib}`);
      default: throw new Error(`unsupported CBOR major type ${major}`);
    }
  }
  const value = item();
  if (pos !== buf.length) throw new Error(`${buf.length - pos} trailing bytes`);
  return value;
}

function option(res, name) {
  const o = res.options.find((x) => x.name === name);
  return o === undefined ? null : o.value;
}

// node-coap converts Content-Format to its media-type name (10000: 'application/vnd.ocf+cbor').
function contentFormat(res) {
  const value = option(res, 'Content-Format');
  if (value === 'application/vnd.ocf+cbor') return 10000;
  return typeof value === 'string' ? value : uintOf(value);
}

function uintOf(value) {
  if (value == null) return null;
  if (typeof value === 'number') return value;
  if (Buffer.isBuffer(value)) return value.length === 0 ? 0 : value.readUIntBE(0, value.length);
  return Number(value);
}

function sourceText(rsinfo) {
  return rsinfo.family === 'IPv6' || rsinfo.address.includes(':')
    ? `[${rsinfo.address}]:${rsinfo.port}`
    : `${rsinfo.address}:${rsinfo.port}`;
}

function get(agent, rsinfo, pathname, query) {
  return new Promise((resolve, reject) => {
    const req = agent.request({ host: rsinfo.address, port: rsinfo.port, pathname, query, confirmable: true });
    const timer = setTimeout(() => reject(new Error(`${pathname}: timeout`)), 10000);
    req.on('response', (res) => { clearTimeout(timer); resolve(res); });
    req.on('error', (e) => { clearTimeout(timer); reject(e); });
    req.end();
  });
}

async function follow(agent, answer) {
  const uuid = answer.deviceuuid;
  try {
    const res = await get(agent, answer.rsinfo, '/oic/res', 'rt=oic.r.doxm');
    if (res.code !== '2.05') return { follow: `/oic/res: ${res.code}` };
    const links = cborDecode(res.payload);
    if (!Array.isArray(links) || links.length !== 1) return { follow: `/oic/res: want one link, got ${links.length}` };
    const link = links[0];
    const out = {
      anchor: link.get('anchor'),
      href: link.get('href'),
      eps: (link.get('eps') || []).map((e) => e.get('ep')),
    };
    if (out.anchor !== `ocf://${uuid}`) return { ...out, follow: `anchor ${out.anchor} is not ocf://${uuid}` };
    if (out.href !== '/oic/sec/doxm') return { ...out, follow: `href ${out.href}` };
    const d = await get(agent, answer.rsinfo, '/oic/d');
    if (d.code !== '2.05') return { ...out, follow: `/oic/d: ${d.code}` };
    const dev = cborDecode(d.payload);
    out.di = dev.get('di');
    out.n = dev.get('n');
    if (out.di !== uuid) return { ...out, follow: `di ${out.di} is not ${uuid}` };
    if (!out.n) return { ...out, follow: 'no n in /oic/d' };
    return { ...out, follow: 'ok' };
  } catch (e) {
    return { follow: String(e && e.message ? e.message : e) };
  }
}

function ifaceV4(name) {
  const addrs = (os.networkInterfaces()[name] || []).filter((a) => a.family === 'IPv4');
  if (addrs.length === 0) throw new Error(`${name} has no IPv4 address`);
  return addrs[0].address;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const v6 = args.group.includes(':');
  const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6 });
  await new Promise((resolve) => sock.bind(0, resolve));
  sock.setMulticastInterface(v6 ? `::%${args.iface}` : ifaceV4(args.iface));
  const agent = new coap.Agent({ socket: sock });
  const answers = [];
  const req = agent.request({
    host: v6 && args.group.startsWith('ff02') ? `${args.group}%${args.iface}` : args.group,
    pathname: '/oic/sec/doxm',
    query: args.query,
    multicast: true,
    multicastTimeout: Math.round(args.wait * 1000),
    options: {
      Accept: 10000,
      // OCF-Accept-Content-Format-Version = 2048 (OCF 1.0.0). By number: node-coap's setOption
      // re-capitalises the name to 'Ocf-Accept-...', which coap-packet does not know, and then
      // writes a truncated option (a malformed datagram the gate rightly drops).
      '2049': Buffer.from([0x08, 0x00]),
    },
  });
  req.on('response', (res) => {
    const answer = {
      source: sourceText(res.rsinfo),
      code: res.code,
      type: res._packet && res._packet.confirmable ? 'CON' : 'NON',
      token: res._packet && res._packet.token ? res._packet.token.toString('hex') : null,
      content_format: contentFormat(res),
      ocf_version: uintOf(option(res, 'OCF-Content-Format-Version')),
      rsinfo: { address: res.rsinfo.address, port: res.rsinfo.port },
    };
    try {
      const payload = cborDecode(res.payload);
      answer.keys = [...payload.keys()];
      answer.deviceuuid = payload.get('deviceuuid');
    } catch (e) {
      answer.payload_error = String(e.message);
    }
    answers.push(answer);
  });
  req.on('error', (e) => { console.error(`request error: ${e.message}`); });
  req.end();
  await new Promise((resolve) => setTimeout(resolve, args.wait * 1000 + 100));
  if (args.follow) {
    const results = await Promise.all(answers.map((a) => (a.deviceuuid ? follow(agent, a) : {})));
    results.forEach((r, i) => Object.assign(answers[i], r));
  }
  for (const a of answers) {
    delete a.rsinfo;
    process.stdout.write(`${JSON.stringify(a)}\n`);
  }
  console.error(`${answers.length} answers`);
  process.exit(0);
}

main().catch((e) => { console.error(`node_discover: ${e.stack || e}`); process.exit(2); });
