export { generateCallerKey, isUserPublicKey, userSigner, verifySignature, type UserSigner } from './nkey.js';
export { loadSigner } from './signer.js';
export { canonical, signFields, verifyFields } from './signed.js';
export {
  NodeKeyRecord,
  nodeKeyPath,
  nodeKeysPrefix,
  parseNodeKey,
  readNodeKey,
  readNodeKeys,
  registerNodeKey,
} from './registry.js';
