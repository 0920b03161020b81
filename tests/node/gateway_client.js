// Drives a MedLedger peer with the real npm @hyperledger/fabric-gateway client: evaluate, submit
// (waiting for the commit), submitAsync + getStatus, a chaincode event, private data through
// transientData, and a chaincode error.
//
//   node gateway_client.js <host:port> <tls root pem> <msp id> <cert pem> <key pem> <channel> <chaincode>
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const { connect, signers } = require('@hyperledger/fabric-gateway');

async function main() {
    const [address, tlsRoot, mspId, certFile, keyFile, channel, chaincode] = process.argv.slice(2);
    const client = new grpc.Client(address, grpc.credentials.createSsl(fs.readFileSync(tlsRoot)));
    const gateway = connect({
        client,
        identity: { mspId, credentials: fs.readFileSync(certFile) },
        signer: signers.newPrivateKeySigner(crypto.createPrivateKey(fs.readFileSync(keyFile))),
        evaluateOptions: () => ({ deadline: Date.now() + 10000 }),
        endorseOptions: () => ({ deadline: Date.now() + 20000 }),
        submitOptions: () => ({ deadline: Date.now() + 10000 }),
        commitStatusOptions: () => ({ deadline: Date.now() + 30000 }),
    });
    const out = {};
    try {
        const network = gateway.getNetwork(channel);
        const contract = network.getContract(chaincode);
        const events = await network.getChaincodeEvents(chaincode);
        const utf8 = (b) => Buffer.from(b).toString();

        out.submit_result = utf8(await contract.submitTransaction('Put', 'npm-key', 'npm-value'));
        out.evaluate_result = utf8(await contract.evaluateTransaction('Get', 'npm-key'));

        const commit = await contract.submitAsync('Put', { arguments: ['npm-key-2', 'second'] });
        const status = await commit.getStatus();
        out.async_status = { code: status.code, successful: status.successful, block: Number(status.blockNumber), txid: commit.getTransactionId() };

        const first = await events[Symbol.asyncIterator]().next();
        out.event = {
            name: first.value.eventName,
            payload: utf8(first.value.payload),
            chaincode: first.value.chaincodeName,
            txid: first.value.transactionId,
            block: Number(first.value.blockNumber),
        };
        events.close();

        await contract.submit('PutPrivate', {
            arguments: [`_implicit_org_${mspId}`, 'npm-private'],
            transientData: { value: 'npm-secret-value' },
        });
        out.private_result = utf8(await contract.evaluateTransaction('GetPrivate', `_implicit_org_${mspId}`, 'npm-private'));

        try {
            await contract.evaluateTransaction('Fail', 'no such record');
            out.error = null;
        } catch (e) {
            out.error = { code: e.code, message: e.message, details: (e.details || []).map((d) => d.message) };
        }
    } finally {
        gateway.close();
        client.close();
    }
    process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
