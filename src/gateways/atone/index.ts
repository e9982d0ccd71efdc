/** `kessai/atone`: atone (NP後払い) protocol code, usable from any Node program (no database, no HTTP server). */
export {
  ATONE_ERROR_CODES,
  ATONE_OPTION_ACCOUNT_LINK,
  ATONE_OPTION_RECURRING,
  atoneInteger,
  AtonePaymentError,
  validateAtonePayment,
  type AtoneCustomer,
  type AtoneDestCustomer,
  type AtoneItem,
  type AtonePayment,
  type AtonePaymentWithoutChecksum,
  type AtoneProblem,
  type AtoneValidationOptions,
} from './payment.js';
export {
  atoneChecksum,
  atoneChecksumPreimage,
  atoneChecksumValues,
  DEFAULT_ATONE_CHECKSUM_EXCLUDED_KEYS,
  verifyAtoneChecksum,
  type AtoneChecksumOptions,
} from './checksum.js';
export { buildAtonePayment, buildAtonePaymentFields, toFullWidth, type AtoneOrderLine, type AtonePaymentInput } from './builder.js';
export {
  ATONE_LIVE_API_URL,
  ATONE_LIVE_SCRIPT_URL,
  ATONE_TEST_API_URL,
  ATONE_TEST_SCRIPT_URL,
  atoneApi,
  AtoneApiError,
  AtoneTransportError,
  type AtoneApi,
  type AtoneApiOptions,
  type AtoneErrorDetail,
  type AtoneRegistration,
  type AtoneTransportErrorKind,
} from './client.js';
export {
  ATONE_TOKEN,
  ATONE_TRANSACTION_ID,
  atoneTransactionState,
  type AtoneRefund,
  type AtoneTransaction,
  type AtoneTransactionState,
} from './transaction.js';
export {
  ATONE_WEBHOOK_CHECKSUM_HEADER,
  atoneConsistencyProblems,
  AtoneWebhookParseError,
  computeAtoneWebhookChecksum,
  DEFAULT_ATONE_WEBHOOK_CHECKSUM_SCHEME,
  parseAtoneWebhook,
  readBackAtoneTransaction,
  verifyAtoneWebhook,
  type AtoneExpectation,
  type AtoneWebhookChecksumOptions,
  type AtoneWebhookChecksumScheme,
  type AtoneWebhookClaim,
} from './webhook.js';
