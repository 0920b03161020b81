// Encodes and decodes Fabric messages with the real npm @hyperledger/fabric-protos classes,
// so that the Rust tests can compare our prost types against Fabric's own bindings.
//
//   node proto_vectors.js encode            -> JSON of hex-encoded messages and their fields
//   node proto_vectors.js decode <json>     -> JSON of the fields Node reads from our bytes
//   node proto_vectors.js headerhash <json> -> block header hash computed with jsrsasign's DER
//   node proto_vectors.js config <json>     -> what Fabric's tools read from a configuration block
'use strict';

const { common, peer, msp, orderer } = require('@hyperledger/fabric-protos');
const { KJUR } = require('jsrsasign');
const crypto = require('crypto');

const hex = (u8) => Buffer.from(u8).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));
const sha256 = (b) => crypto.createHash('sha256').update(b).digest();

function encode() {
    const creator = new msp.SerializedIdentity();
    creator.setMspid('Hospital1MSP');
    creator.setIdBytes(Buffer.from('-----BEGIN CERTIFICATE-----\nnot a real cert\n-----END CERTIFICATE-----\n'));
    const creatorBytes = creator.serializeBinary();
    const nonce = Buffer.alloc(24, 7);
    const txId = sha256(Buffer.concat([nonce, Buffer.from(creatorBytes)])).toString('hex');

    const ccId = new peer.ChaincodeID();
    ccId.setName('records');
    const ext = new peer.ChaincodeHeaderExtension();
    ext.setChaincodeId(ccId);

    const ts = new (require('google-protobuf/google/protobuf/timestamp_pb').Timestamp)();
    ts.setSeconds(1764000000);
    ts.setNanos(123000000);
    const ch = new common.ChannelHeader();
    ch.setType(common.HeaderType.ENDORSER_TRANSACTION);
    ch.setTxId(txId);
    ch.setTimestamp(ts);
    ch.setChannelId('medchannel');
    ch.setExtension$(ext.serializeBinary());
    const sh = new common.SignatureHeader();
    sh.setCreator(creatorBytes);
    sh.setNonce(nonce);
    const header = new common.Header();
    header.setChannelHeader(ch.serializeBinary());
    header.setSignatureHeader(sh.serializeBinary());

    const input = new peer.ChaincodeInput();
    input.setArgsList([Buffer.from('CreateRecord'), Buffer.from('R-1'), Buffer.from('P-0042')]);
    const spec = new peer.ChaincodeSpec();
    spec.setType(peer.ChaincodeSpec.Type.NODE);
    spec.setChaincodeId(ccId);
    spec.setInput(input);
    const cis = new peer.ChaincodeInvocationSpec();
    cis.setChaincodeSpec(spec);
    const cpp = new peer.ChaincodeProposalPayload();
    cpp.setInput(cis.serializeBinary());
    cpp.getTransientmapMap().set('content', Buffer.from('{"resourceType":"Observation"}'));
    const proposal = new peer.Proposal();
    proposal.setHeader(header.serializeBinary());
    proposal.setPayload(cpp.serializeBinary());
    const sp = new peer.SignedProposal();
    sp.setProposalBytes(proposal.serializeBinary());
    sp.setSignature(Buffer.from('3045022100aa', 'hex'));

    const payload = new common.Payload();
    payload.setHeader(header);
    payload.setData(Buffer.from('transaction bytes'));
    const env = new common.Envelope();
    env.setPayload(payload.serializeBinary());
    env.setSignature(Buffer.from('sig'));

    const bh = new common.BlockHeader();
    bh.setNumber(300);
    bh.setPreviousHash(sha256('prev'));
    const data = new common.BlockData();
    data.setDataList([env.serializeBinary(), env.serializeBinary()]);
    bh.setDataHash(sha256(Buffer.concat(data.getDataList_asU8())));
    const md = new common.BlockMetadata();
    md.setMetadataList([new Uint8Array(), new Uint8Array(), new Uint8Array([0, 11]), new Uint8Array(), new Uint8Array()]);
    const block = new common.Block();
    block.setHeader(bh);
    block.setData(data);
    block.setMetadata(md);

    const seek = new orderer.SeekInfo();
    const start = new orderer.SeekPosition();
    const spec2 = new orderer.SeekSpecified();
    spec2.setNumber(5);
    start.setSpecified(spec2);
    const stop = new orderer.SeekPosition();
    stop.setNewest(new orderer.SeekNewest());
    seek.setStart(start);
    seek.setStop(stop);
    seek.setBehavior(orderer.SeekInfo.SeekBehavior.FAIL_IF_NOT_READY);

    return {
        signed_proposal: hex(sp.serializeBinary()),
        envelope: hex(env.serializeBinary()),
        block: hex(block.serializeBinary()),
        seek_info: hex(seek.serializeBinary()),
        expect: {
            tx_id: txId,
            creator: hex(creatorBytes),
            channel: 'medchannel',
            chaincode: 'records',
            args: ['CreateRecord', 'R-1', 'P-0042'],
            transient_content: '{"resourceType":"Observation"}',
            timestamp_seconds: 1764000000,
            timestamp_nanos: 123000000,
            block_number: 300,
            block_data_hash: hex(bh.getDataHash_asU8()),
            block_filter: '000b',
        },
    };
}

function decode(input) {
    const out = {};
    const sp = peer.SignedProposal.deserializeBinary(unhex(input.signed_proposal));
    const proposal = peer.Proposal.deserializeBinary(sp.getProposalBytes_asU8());
    const header = common.Header.deserializeBinary(proposal.getHeader_asU8());
    const ch = common.ChannelHeader.deserializeBinary(header.getChannelHeader_asU8());
    const sh = common.SignatureHeader.deserializeBinary(header.getSignatureHeader_asU8());
    const ext = peer.ChaincodeHeaderExtension.deserializeBinary(ch.getExtension_asU8());
    const cpp = peer.ChaincodeProposalPayload.deserializeBinary(proposal.getPayload_asU8());
    const cis = peer.ChaincodeInvocationSpec.deserializeBinary(cpp.getInput_asU8());
    const creator = msp.SerializedIdentity.deserializeBinary(sh.getCreator_asU8());
    out.proposal = {
        type: ch.getType(),
        tx_id: ch.getTxId(),
        channel: ch.getChannelId(),
        chaincode: ext.getChaincodeId().getName(),
        mspid: creator.getMspid(),
        nonce: hex(sh.getNonce_asU8()),
        computed_tx_id: sha256(Buffer.concat([Buffer.from(sh.getNonce_asU8()), Buffer.from(sh.getCreator_asU8())])).toString('hex'),
        args: cis.getChaincodeSpec().getInput().getArgsList_asU8().map((a) => Buffer.from(a).toString()),
        transient: Object.fromEntries(cpp.getTransientmapMap().toArray().map(([k, v]) => [k, Buffer.from(v).toString()])),
        signature: hex(sp.getSignature_asU8()),
    };
    const block = common.Block.deserializeBinary(unhex(input.block));
    const bh = block.getHeader();
    out.block = {
        number: bh.getNumber(),
        previous_hash: hex(bh.getPreviousHash_asU8()),
        data_hash: hex(bh.getDataHash_asU8()),
        computed_data_hash: sha256(Buffer.concat(block.getData().getDataList_asU8().map((d) => Buffer.from(d)))).toString('hex'),
        data_count: block.getData().getDataList().length,
        metadata_count: block.getMetadata().getMetadataList().length,
        first_envelope_channel: (() => {
            const env = common.Envelope.deserializeBinary(block.getData().getDataList_asU8()[0]);
            const p = common.Payload.deserializeBinary(env.getPayload_asU8());
            return common.ChannelHeader.deserializeBinary(p.getHeader().getChannelHeader_asU8()).getChannelId();
        })(),
    };
    return out;
}

function headerHash(input) {
    const seq = new KJUR.asn1.DERSequence({
        array: [
            new KJUR.asn1.DERInteger({ bigint: new (require('jsrsasign').BigInteger)(String(input.number), 10) }),
            new KJUR.asn1.DEROctetString({ hex: input.previous_hash }),
            new KJUR.asn1.DEROctetString({ hex: input.data_hash }),
        ],
    });
    const der = Buffer.from(seq.getEncodedHex(), 'hex');
    return { der: der.toString('hex'), hash: sha256(der).toString('hex') };
}

// What Fabric's tools read from a channel's configuration block.
function config(input) {
    const block = common.Block.deserializeBinary(unhex(input.block));
    const env = common.Envelope.deserializeBinary(block.getData().getDataList_asU8()[0]);
    const payload = common.Payload.deserializeBinary(env.getPayload_asU8());
    const ce = common.ConfigEnvelope.deserializeBinary(payload.getData_asU8());
    const root = ce.getConfig().getChannelGroup();
    const caps = (group) => common.Capabilities.deserializeBinary(
        group.getValuesMap().get('Capabilities').getValue_asU8()).getCapabilitiesMap().toArray().map(([k]) => k);
    const ord = root.getGroupsMap().get('Orderer');
    const ct = orderer.ConsensusType.deserializeBinary(ord.getValuesMap().get('ConsensusType').getValue_asU8());
    const opts = orderer.smartbft.Options.deserializeBinary(ct.getMetadata_asU8());
    const endpoints = {};
    ord.getGroupsMap().forEach((org, name) => {
        const v = org.getValuesMap().get('Endpoints');
        if (v) endpoints[name] = common.OrdererAddresses.deserializeBinary(v.getValue_asU8()).getAddressesList();
    });
    return {
        channel_capabilities: caps(root),
        orderer_capabilities: caps(ord),
        application_capabilities: caps(root.getGroupsMap().get('Application')),
        consensus_type: ct.getType(),
        request_batch_max_count: opts.getRequestBatchMaxCount(),
        leader_heartbeat_timeout: opts.getLeaderHeartbeatTimeout(),
        leader_heartbeat_count: opts.getLeaderHeartbeatCount(),
        request_complain_timeout: opts.getRequestComplainTimeout(),
        request_pool_size: opts.getRequestPoolSize(),
        endpoints,
    };
}

const [mode, arg] = process.argv.slice(2);
let result;
if (mode === 'encode') result = encode();
else if (mode === 'decode') result = decode(JSON.parse(arg));
else if (mode === 'headerhash') result = JSON.parse(arg).map(headerHash);
else if (mode === 'config') result = config(JSON.parse(arg));
else {
    console.error('usage: proto_vectors.js encode|decode <json>|headerhash <json>');
    process.exit(2);
}
process.stdout.write(JSON.stringify(result));
