// Drives the rest of MedLedger's CA API with the real npm fabric-ca-client 2.2: IdentityService,
// AffiliationService, CertificateService, several CAs in one server (caname), Fabric CA's
// attribute rules and refusals. Every call's outcome is printed as JSON ({ok: result} or
// {code, message} as the client surfaces a refusal) for the Rust test to check.
//
//   node ca_services.js <https url> <tls root pem file> <ca name> <second ca name> <msp id>
'use strict';

const fs = require('fs');
const FabricCAServices = require('fabric-ca-client');
const { User } = require('fabric-common');

async function attempt(fn) {
    try {
        const r = await fn();
        return { ok: r && r.result !== undefined ? r.result : r };
    } catch (e) {
        const err = (e.errors && e.errors[0]) || {};
        return { code: err.code, message: err.message || e.message };
    }
}

async function main() {
    const [url, tlsRoot, caName, otherCaName, mspid] = process.argv.slice(2);
    const tls = { trustedRoots: [fs.readFileSync(tlsRoot)], verify: true };
    const ca = new FabricCAServices(url, tls, caName);
    const out = {};
    const user = (id, e) => User.createUser(id, '', mspid, e.certificate, e.key.toBytes());

    const admin = user('admin', await ca.enroll({ enrollmentID: 'admin', enrollmentSecret: 'adminpw' }));
    const ids = ca.newIdentityService();
    const affs = ca.newAffiliationService();
    const certs = ca.newCertificateService();

    // Identities: add, get one, list, modify, enroll with the new secret and attribute.
    out.create = await attempt(() => ids.create({
        enrollmentID: 'nurse2', affiliation: 'hospital1.nursing', maxEnrollments: -1,
        attrs: [{ name: 'role', value: 'nurse', ecert: true }],
    }, admin).then((secret) => ({ secret })));
    out.get_one = await attempt(() => ids.getOne('nurse2', admin));
    out.get_all = await attempt(() => ids.getAll(admin));
    out.update = await attempt(() => ids.update('nurse2', {
        attrs: [{ name: 'role', value: 'headnurse', ecert: true }], enrollmentSecret: 'newpw',
    }, admin));
    out.enroll_modified = await attempt(() => ca.enroll({ enrollmentID: 'nurse2', enrollmentSecret: 'newpw' })
        .then((e) => e.certificate));
    out.update_bad_affiliation = await attempt(() => ids.update('nurse2', { affiliation: 'nowhere' }, admin));
    out.get_missing = await attempt(() => ids.getOne('ghost', admin));

    // A registrar for clients only, allowed to give `role` and to revoke.
    await ids.create({
        enrollmentID: 'clerk', enrollmentSecret: 'clerkpw', affiliation: 'hospital1', maxEnrollments: -1,
        attrs: [
            { name: 'hf.Registrar.Roles', value: 'client' },
            { name: 'hf.Registrar.Attributes', value: 'role' },
            { name: 'hf.Revoker', value: 'true' },
        ],
    }, admin);
    const clerk = user('clerk', await ca.enroll({ enrollmentID: 'clerk', enrollmentSecret: 'clerkpw' }));
    out.clerk_creates_peer = await attempt(() => ids.create({
        enrollmentID: 'sneakypeer', type: 'peer', affiliation: 'hospital1',
    }, clerk));
    out.clerk_gives_patient_id = await attempt(() => ids.create({
        enrollmentID: 'p1', type: 'client', affiliation: 'hospital1',
        attrs: [{ name: 'patientId', value: '42' }],
    }, clerk));
    out.clerk_creates_client = await attempt(() => ids.create({
        enrollmentID: 'p2', type: 'client', affiliation: 'hospital1',
        attrs: [{ name: 'role', value: 'patient', ecert: true }],
    }, clerk).then((secret) => ({ secret })));
    out.clerk_modifies_admin = await attempt(() => ids.update('admin', { maxEnrollments: 5 }, clerk));

    // Revoke applies the type check: a registrar for clients cannot revoke a peer.
    await ids.create({ enrollmentID: 'peer9', enrollmentSecret: 'peer9pw', type: 'peer', affiliation: 'hospital1' }, admin);
    await ca.enroll({ enrollmentID: 'peer9', enrollmentSecret: 'peer9pw' });
    out.clerk_gets_peer = await attempt(() => ids.getOne('peer9', clerk));
    out.clerk_revokes_peer = await attempt(() => ca.revoke({ enrollmentID: 'peer9' }, clerk));

    // Delete: one's own needs force; a removed identity is gone.
    out.delete_self = await attempt(() => ids.delete('admin', admin));
    out.delete = await attempt(() => ids.delete('nurse2', admin));
    out.get_deleted = await attempt(() => ids.getOne('nurse2', admin));

    // Affiliations.
    out.aff_all = await attempt(() => affs.getAll(admin));
    out.aff_create = await attempt(() => affs.create({ name: 'hospital1.radiology' }, admin));
    out.aff_create_again = await attempt(() => affs.create({ name: 'hospital1.radiology' }, admin));
    out.aff_create_orphan = await attempt(() => affs.create({ name: 'hospital9.x' }, admin));
    out.aff_create_forced = await attempt(() => affs.create({ name: 'hospital9.x', force: true }, admin));
    await ids.create({ enrollmentID: 'rad1', affiliation: 'hospital1.radiology' }, admin);
    out.aff_rename = await attempt(() => affs.update('hospital1.radiology', { name: 'hospital1.imaging' }, admin));
    out.aff_rename_forced = await attempt(() => affs.update('hospital1.radiology', { name: 'hospital1.imaging', force: true }, admin));
    out.rad1_after_rename = await attempt(() => ids.getOne('rad1', admin));
    out.aff_one = await attempt(() => affs.getOne('hospital1', admin));
    out.aff_delete_parent = await attempt(() => affs.delete({ name: 'hospital9' }, admin));
    out.aff_delete_forced = await attempt(() => affs.delete({ name: 'hospital9', force: true }, admin));
    out.aff_by_clerk = await attempt(() => affs.getAll(clerk));

    // Certificates.
    out.certs_admin = await attempt(() => certs.getCertificates({ id: 'admin' }, admin));
    out.certs_not_revoked = await attempt(() => certs.getCertificates({ notrevoked: true }, admin));
    out.certs_revoked_recently = await attempt(() => certs.getCertificates({ revoked_start: '-1h', revoked_end: '+1h' }, admin));
    out.certs_bad_time = await attempt(() => certs.getCertificates({ expired_start: 'yesterday' }, admin));
    out.certs_clerk = await attempt(() => certs.getCertificates({}, clerk));
    const p2 = user('p2', await ca.enroll({ enrollmentID: 'p2', enrollmentSecret: out.clerk_creates_client.ok.secret }));
    out.certs_plain_client = await attempt(() => certs.getCertificates({}, p2));

    // Attribute rules at enrollment.
    const secretOf = async (id) => ids.create({
        enrollmentID: id, affiliation: 'hospital1', maxEnrollments: -1,
        attrs: [{ name: 'role', value: 'doctor', ecert: true }, { name: 'dept', value: 'cardiology' }],
    }, admin);
    const s = await secretOf('doc1');
    out.attrs_default = await attempt(() => ca.enroll({ enrollmentID: 'doc1', enrollmentSecret: s }).then((e) => e.certificate));
    out.attrs_requested = await attempt(() => ca.enroll({
        enrollmentID: 'doc1', enrollmentSecret: s,
        attr_reqs: [{ name: 'dept', optional: false }, { name: 'missing', optional: true }],
    }).then((e) => e.certificate));
    out.attrs_missing = await attempt(() => ca.enroll({
        enrollmentID: 'doc1', enrollmentSecret: s, attr_reqs: [{ name: 'missing', optional: false }],
    }));
    const doc = user('doc1', await ca.enroll({ enrollmentID: 'doc1', enrollmentSecret: s }));
    out.attrs_reenroll_none = await attempt(() => ca.reenroll(doc, []).then((e) => e.certificate));

    // Several CAs in one server, and an unknown one.
    const other = new FabricCAServices(url, tls, otherCaName);
    out.other_ca_enroll = await attempt(() => other.enroll({ enrollmentID: 'admin2', enrollmentSecret: 'admin2pw' })
        .then((e) => e.certificate));
    out.other_ca_wrong_identity = await attempt(() => other.enroll({ enrollmentID: 'admin', enrollmentSecret: 'adminpw' }));
    const unknown = new FabricCAServices(url, tls, 'no-such-ca');
    out.unknown_ca_enroll = await attempt(() => unknown.enroll({ enrollmentID: 'admin', enrollmentSecret: 'adminpw' }));
    out.unknown_ca_identities = await attempt(() => unknown.newIdentityService().getAll(admin));

    process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
