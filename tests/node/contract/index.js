// A contract written with the real npm fabric-contract-api, run by a MedLedger peer as
// chaincode-as-a-service (`fabric-chaincode-node server`). Mirrors the Rust example's functions.
'use strict';

const { Contract } = require('fabric-contract-api');

class KvContract extends Contract {
    async Put(ctx, key, value) {
        await ctx.stub.putState(key, Buffer.from(value));
        ctx.stub.setEvent('Put', Buffer.from(key));
        return value;
    }

    async Get(ctx, key) {
        const value = await ctx.stub.getState(key);
        if (!value || value.length === 0) {
            throw new Error(`key ${key} not found`);
        }
        return value.toString();
    }

    async Whoami(ctx) {
        return `${ctx.clientIdentity.getMSPID()} ${ctx.clientIdentity.getAttributeValue('role')}`;
    }

    async Fail(ctx, message) {
        throw new Error(message);
    }
}

module.exports.contracts = [KvContract];
