// Drives MedLedger's CA with the real npm fabric-ca-client 2.2: enroll the bootstrap admin,
// register and enroll a user with an attribute, reenroll it, revoke it with a CRL, and try to
// enroll it again. Prints the certificates and results as JSON for the Rust test to verify.
//
//   node ca_client.js <https url> <tls root pem file> <ca name> <msp id>
'use strict';

const fs = require('fs');
const FabricCAServices = require('fabric-ca-client');
const { User } = require('fabric-common');

async function main() {
    const [url, tlsRoot, caName, mspid] = process.argv.slice(2);
    const ca = new FabricCAServices(url, { trustedRoots: [fs.readFileSync(tlsRoot)], verify: true }, caName);

    const adminEnrollment = await ca.enroll({ enrollmentID: 'admin', enrollmentSecret: 'adminpw' });
    const admin = User.createUser('admin', '', mspid, adminEnrollment.certificate, adminEnrollment.key.toBytes());

    const secret = await ca.register({
        enrollmentID: 'nodeuser',
        enrollmentSecret: 'nodeuserpw',
        role: 'client',
        affiliation: 'hospital1.nursing',
        maxEnrollments: -1,
        attrs: [{ name: 'role', value: 'nurse', ecert: true }],
    }, admin);

    const userEnrollment = await ca.enroll({
        enrollmentID: 'nodeuser',
        enrollmentSecret: secret,
        attr_reqs: [{ name: 'role', optional: false }],
    });
    const user = User.createUser('nodeuser', '', mspid, userEnrollment.certificate, userEnrollment.key.toBytes());

    const reenrolled = await ca.reenroll(user, []);

    const revoked = await ca.revoke({ enrollmentID: 'nodeuser', reason: 'keycompromise', gencrl: true }, admin);

    let enrollAfterRevoke = null;
    try {
        await ca.enroll({ enrollmentID: 'nodeuser', enrollmentSecret: secret });
    } catch (e) {
        enrollAfterRevoke = e.message;
    }

    process.stdout.write(JSON.stringify({
        admin_cert: adminEnrollment.certificate,
        secret,
        user_cert: userEnrollment.certificate,
        root_chain: userEnrollment.rootCertificate,
        reenrolled_cert: reenrolled.certificate,
        revoked_certs: revoked.result.RevokedCerts,
        crl: Buffer.from(revoked.result.CRL, 'base64').toString(),
        enroll_after_revoke_error: enrollAfterRevoke,
    }));
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
