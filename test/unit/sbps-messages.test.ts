import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeSjis, encodeSjis, sjisUrlEncode } from '../../src/gateways/common/sjis.js';
import {
  buildFreeCsv,
  buildPurchaseRequest,
  checkField,
  checkFreeCsv,
  encodeMessage,
  normaliseForSbps,
  orderedValues,
  parseFreeCsv,
  parseMessage,
  REQUEST_FIELDS,
  SBPS_LIMITS,
  sbpsHash,
  SbpsFieldError,
  validateMessage,
  verifyMessage,
  type FieldDef,
  type PurchaseRequestInput,
  type SbpsMessage,
} from '../../src/gateways/sbps/index.js';

const KEY = '398a58952baf329cac5efbae97ea84ba17028d02';

const BASE: PurchaseRequestInput = {
  pay_method: 'credit',
  merchant_id: '19788',
  service_id: '001',
  cust_code: 'CUST0001',
  order_id: 'ORDER0001',
  item_id: 'ITEM1',
  item_name: 'テスト商品',
  amount: '980',
  pay_type: '0',
  service_type: '0',
  terminal_type: '0',
  success_url: 'https://example.com/s',
  cancel_url: 'https://example.com/c',
  error_url: 'https://example.com/e',
  pagecon_url: 'https://example.com/r',
  request_date: '20240101120000',
  limit_second: '600',
};

const build = (over: PurchaseRequestInput = {}, normalise = false): [string, string][] =>
  buildPurchaseRequest({ ...BASE, ...over }, { hashKey: KEY, normalise });
const valueOf = (pairs: [string, string][], name: string): string | undefined => pairs.find(([n]) => n === name)?.[1];
const hashOf = (pairs: [string, string][]): string | undefined => valueOf(pairs, 'sps_hashcode');

function refused(fn: () => unknown, expected: { field: string; char?: string; position?: number; code?: string; message?: RegExp }): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof SbpsFieldError, `expected SbpsFieldError, got ${String(error)}`);
    assert.equal(error.field, expected.field);
    if (expected.char !== undefined) assert.equal(error.char, expected.char);
    if (expected.position !== undefined) assert.equal(error.position, expected.position);
    if (expected.code !== undefined) assert.equal(error.code, expected.code);
    if (expected.message !== undefined) assert.match(error.message, expected.message);
    return true;
  });
}

describe('the purchase request form', () => {
  test('every field in definition order, unset ones blank, then the hash; never the key', () => {
    const pairs = build();
    const names = REQUEST_FIELDS.filter((s): s is FieldDef => s !== 'details').map((d) => d.name);
    assert.deepEqual(pairs.map(([n]) => n), [...names, 'sps_hashcode']);
    assert.equal(valueOf(pairs, 'sps_cust_no'), '');
    assert.ok(pairs.every(([name, value]) => !value.includes(KEY) && !/hash_?key/i.test(name)), 'pairs.every(([name, value]) => !value.includes(KEY) && !/hash_?key/i.test(name))');
  });

  test('a hash key passed as a field is refused', () => {
    refused(() => build({ hashkey: KEY } as PurchaseRequestInput), { field: 'hashkey', message: /never sent/ });
  });

  test('values are sent trimmed, as they are hashed', () => {
    assert.equal(hashOf(build({ item_name: '  テスト商品 ' })), hashOf(build()));
    assert.equal(valueOf(build({ order_id: ' ORDER0001\t' }), 'order_id'), 'ORDER0001');
  });
});

describe('validation names the field, the character and its position', () => {
  test('① (NEC special character)', () => {
    refused(() => build({ item_name: 'CD①' }), {
      field: 'item_name',
      char: '①',
      position: 3,
      code: 'attribute',
      message: /^item_name: "①" at position 3 is not allowed \(platform-dependent character/,
    });
  });

  test('㈱ in free1', () => {
    refused(() => build({ free1: 'ケッサイ㈱' }), { field: 'free1', char: '㈱', position: 5 });
  });

  test('髙 (IBM extension) in a detail row names the row', () => {
    refused(() => build({ details: [{ dtl_item_id: 'A', dtl_item_count: '1', dtl_amount: '1' }, { dtl_item_id: 'B', dtl_item_name: '髙橋', dtl_item_count: '1', dtl_amount: '1' }] }), {
      field: 'dtl_item_name[2]',
      char: '髙',
      position: 1,
    });
  });

  test('𠮷 (outside the BMP) is refused at its code-point position', () => {
    refused(() => build({ item_name: '𠮷野家' }), { field: 'item_name', char: '𠮷', position: 1, message: /Basic Multilingual Plane/ });
  });

  test('〜 without normalise is refused by name; with normalise it is accepted as ー', () => {
    refused(() => build({ item_name: '10〜20個' }), { field: 'item_name', char: '〜', position: 3, message: /U\+FF5E/ });
    const pairs = build({ item_name: '10〜20個' }, true);
    assert.equal(valueOf(pairs, 'item_name'), '10ー20個');
    assert.equal(hashOf(pairs), hashOf(build({ item_name: '10ー20個' })));
  });

  test('～ (CP932 wave dash) is one of the specification\'s eight exception characters', () => {
    refused(() => build({ item_name: '10～20個' }), { field: 'item_name', char: '～', position: 3, message: /exception character: JIS X 0208 1-33 wave dash/ });
    for (const ch of ['―', '＼', '～', '∥', '－', '￠', '￡', '￢']) {
      refused(() => build({ free2: `a${ch}` }), { field: 'free2', char: ch, position: 2, message: /exception character/ });
    }
  });

  test('normalise rewrites dashes, minus and single-byte symbols; ＼ and ￠ stay refused', () => {
    assert.equal(normaliseForSbps('Ｔシャツ（白）−Ｌ — 限定'), 'Ｔシャツ（白）‐Ｌ ‐ 限定');
    assert.equal(normaliseForSbps("CD (初回盤) Artist's \"Best\" 100%"), 'CD （初回盤） Artist’s ”Best” 100％');
    assert.equal(valueOf(build({ item_name: 'CD(初回盤)' }, true), 'item_name'), 'CD（初回盤）');
    refused(() => build({ item_name: 'CD(初回盤)' }), { field: 'item_name', char: '(', position: 3, message: /single-byte symbol/ });
    refused(() => build({ item_name: 'a\\b' }, true), { field: 'item_name', char: '\\', position: 2 });
    refused(() => build({ item_name: '5¢' }, true), { field: 'item_name', char: '￠', position: 2 });
  });

  test('half-width katakana in M fields become full width before validating and hashing', () => {
    const pairs = build({ item_name: 'ｶﾞｲﾄﾞﾌﾞｯｸ', free1: 'ﾊﾟﾝﾌ' });
    assert.equal(valueOf(pairs, 'item_name'), 'ガイドブック');
    assert.equal(valueOf(pairs, 'free1'), 'パンフ');
    assert.equal(hashOf(pairs), hashOf(build({ item_name: 'ガイドブック', free1: 'パンフ' })));
  });

  test('half-width katakana in a single-byte field is refused, not converted', () => {
    refused(() => build({ item_id: 'ｶ1' }), { field: 'item_id', char: 'ｶ', position: 1 });
  });

  test('type checks: N digits only, X the single-byte set', () => {
    refused(() => build({ amount: '-980' }), { field: 'amount', char: '-', position: 1, message: /digits only/ });
    refused(() => build({ amount: '９８０' }), { field: 'amount', char: '９', position: 1 });
    refused(() => build({ order_id: 'ORD#1' }), { field: 'order_id', char: '#', position: 4 });
    assert.doesNotThrow(() => build({ order_id: 'ord-1_2.3@x*y z' }));
  });

  test('lengths count Shift_JIS bytes', () => {
    const max = SBPS_LIMITS.item_name;
    assert.doesNotThrow(() => build({ item_name: 'あ'.repeat(max / 2) }));
    refused(() => build({ item_name: 'あ'.repeat(max / 2 + 1) }), { field: 'item_name', code: 'length', message: new RegExp(`${max + 2} bytes in Shift_JIS, at most ${max}`) });
    assert.doesNotThrow(() => build({ item_name: 'a'.repeat(max) }));
    refused(() => build({ item_name: `${'a'.repeat(max - 1)}あ` }), { field: 'item_name', code: 'length' });
    // half-width kana become 2-byte characters first
    refused(() => build({ item_name: 'ｱ'.repeat(max / 2 + 1) }), { field: 'item_name', code: 'length' });
  });

  test('limits are overridable per call', () => {
    const long = 'あ'.repeat(30);
    refused(() => build({ item_name: long }), { field: 'item_name', code: 'length' });
    assert.doesNotThrow(() => buildPurchaseRequest({ ...BASE, item_name: long }, { hashKey: KEY, limits: { item_name: 60 } }));
  });

  test('a missing required field', () => {
    refused(() => build({ order_id: '' }), { field: 'order_id', code: 'required', message: /^order_id: is required$/ });
    refused(() => build({ pagecon_url: undefined }), { field: 'pagecon_url', code: 'required' });
    assert.doesNotThrow(() => build({ pay_method: '' }));
  });

  test('a field left out of the message altogether is refused as required, even where a blank is fine', () => {
    const fields = Object.fromEntries(build().slice(0, -1).filter(([name]) => name !== 'sps_cust_no' && name !== 'free_csv'));
    const errors = validateMessage('request', { fields, details: [] });
    assert.deepEqual(errors.map((e) => [e.field, e.code]), [['sps_cust_no', 'required'], ['free_csv', 'required']]);
    assert.match(errors[0]!.message, /the element is missing/);
    assert.deepEqual(validateMessage('request', { fields: { ...fields, sps_cust_no: '', free_csv: '' }, details: [] }), []);
  });

  test('request_date must be YYYYMMDDHHMMSS', () => {
    refused(() => build({ request_date: '2024010112' }), { field: 'request_date', code: 'format' });
  });

  test('validateMessage lists every problem for the sandbox', () => {
    const msg: SbpsMessage = { fields: { ...Object.fromEntries(build().slice(0, -1)), amount: 'x', order_id: '', item_name: '①' }, details: [] };
    const errors = validateMessage('request', msg);
    assert.deepEqual(errors.map((e) => [e.field, e.code]), [['order_id', 'required'], ['item_name', 'attribute'], ['amount', 'attribute']]);
  });
});

describe('free_csv', () => {
  const customer = {
    LAST_NAME: '鈴木',
    FIRST_NAME: '太郎',
    LAST_NAME_KANA: 'スズキ',
    FIRST_NAME_KANA: 'タロウ',
    FIRST_ZIP: '210',
    SECOND_ZIP: '0001',
    ADD1: '岐阜県',
    ADD2: 'あああ市あああ町',
    ADD3: '',
    TEL: '12345679801',
    MAIL: 'aaaa@bb.jp',
    ITEM_NAME: 'TEST ITEM',
  };
  const csv = 'LAST_NAME=鈴木,FIRST_NAME=太郎,LAST_NAME_KANA=スズキ,FIRST_NAME_KANA=タロウ,FIRST_ZIP=210,SECOND_ZIP=0001,ADD1=岐阜県,ADD2=あああ市あああ町,ADD3=,TEL=12345679801,MAIL=aaaa@bb.jp,ITEM_NAME=TEST ITEM';

  test('KEY=VALUE in the samples\' order, Base64 over Shift_JIS by default', () => {
    const value = buildFreeCsv(customer);
    assert.equal(decodeSjis(Buffer.from(value, 'base64')), csv);
    assert.deepEqual(parseFreeCsv(value), customer);
  });

  test('base64Of utf8 is the named alternative', () => {
    const value = buildFreeCsv(customer, { base64Of: 'utf8' });
    assert.equal(Buffer.from(value, 'base64').toString('utf8'), csv);
    assert.deepEqual(parseFreeCsv(value, { base64Of: 'utf8' }), customer);
  });

  for (const [key, value, char, position] of [
    ['ADD2', '1-2-3,101', ',', 6],
    ['ADD3', "O'Hara", "'", 2],
    ['LAST_NAME', '"鈴木"', '"', 1],
    ['ADD1', '100%', '%', 4],
    ['ADD2', 'A|B', '|', 2],
    ['ADD2', 'A&B', '&', 2],
    ['ITEM_NAME', '<b>', '<', 1],
    ['ITEM_NAME', 'a>b', '>', 2],
    ['LAST_NAME_KANA', 'ｽｽﾞｷ', 'ｽ', 1],
    ['LAST_NAME', '髙橋', '髙', 1],
  ] as const) {
    test(`${key}: ${JSON.stringify(char)} is refused`, () => {
      refused(() => buildFreeCsv({ [key]: value }), { field: `free_csv.${key}`, char, position });
    });
  }

  test('MAIL takes letters, digits and @ . _ - only', () => {
    assert.doesNotThrow(() => buildFreeCsv({ MAIL: 'a.b_c-d@example.co.jp' }));
    refused(() => buildFreeCsv({ MAIL: 'a+tag@example.com' }), { field: 'free_csv.MAIL', char: '+', position: 2 });
    refused(() => buildFreeCsv({ MAIL: 'ａ@example.com' }), { field: 'free_csv.MAIL', char: 'ａ', position: 1 });
  });

  test('postcode halves and telephone are digits', () => {
    refused(() => buildFreeCsv({ TEL: '090-1234-5678' }), { field: 'free_csv.TEL', code: 'format' });
    refused(() => buildFreeCsv({ FIRST_ZIP: '1234' }), { field: 'free_csv.FIRST_ZIP', code: 'format' });
  });

  test('an unknown key is refused', () => {
    refused(() => buildFreeCsv({ NAME: 'x' } as never), { field: 'free_csv.NAME' });
  });

  test('freeCsv in the request becomes free_csv and is hashed; giving both is refused', () => {
    const pairs = build({ freeCsv: customer });
    assert.equal(valueOf(pairs, 'free_csv'), buildFreeCsv(customer));
    assert.equal(hashOf(pairs), hashOf(build({ free_csv: buildFreeCsv(customer) })));
    assert.notEqual(hashOf(pairs), hashOf(build()));
    refused(() => build({ freeCsv: customer, free_csv: 'QQ==' }), { field: 'free_csv' });
  });

  test('a free_csv given directly must already be Base64', () => {
    refused(() => build({ free_csv: 'LAST_NAME=Suzuki' }), { field: 'free_csv', code: 'format' });
  });

  test('a received free_csv is decoded and checked as the builder checks it (the simulator uses this)', () => {
    const b64 = (text: string) => encodeSjis(text).toString('base64');
    assert.equal(checkFreeCsv(buildFreeCsv(customer)), undefined);
    assert.equal(checkFreeCsv(b64('NICKNAME=たろう')), undefined, 'a key outside the samples is not refused, its value is checked');
    const problem = (value: string) => {
      const e = checkFreeCsv(value);
      return e && [e.field, e.code, e.char];
    };
    assert.deepEqual(problem(b64('ADD2=A&B')), ['free_csv.ADD2', 'attribute', '&']);
    assert.deepEqual(problem(b64('LAST_NAME_KANA=ｽｽﾞｷ')), ['free_csv.LAST_NAME_KANA', 'attribute', 'ｽ']);
    assert.deepEqual(problem(b64('NICKNAME=100%')), ['free_csv.NICKNAME', 'attribute', '%']);
    assert.deepEqual(problem(b64('ADD2=1,2')), ['free_csv', 'format', undefined]);
    assert.deepEqual(problem('TEFTVF9OQU1FPQ'), ['free_csv', 'format', undefined], 'length not a multiple of 4');
    // Given directly to the builder, the same value is refused before it reaches SBPS.
    refused(() => build({ free_csv: b64('ADD2=A&B') }), { field: 'free_csv.ADD2', char: '&' });
  });
});

describe('detail rows', () => {
  const rows = [
    { dtl_item_id: 'SBPS-001', dtl_item_name: 'テスト明細商品名1', dtl_item_count: '1', dtl_tax: '50', dtl_amount: '1000' },
    { dtl_item_id: 'SBPS-002', dtl_item_name: 'ﾃｽﾄ明細商品名2', dtl_item_count: '1', dtl_tax: '100', dtl_amount: '2000' },
  ];

  test('go after free_csv and before request_date, row by row, numbered when not given', () => {
    const pairs = build({ details: rows });
    const names = pairs.map(([n]) => n);
    const first = names.indexOf('dtl_rowno');
    assert.equal(names[first - 1], 'free_csv');
    assert.equal(names[first + 18], 'request_date');
    assert.deepEqual(
      pairs.slice(first, first + 18).map(([, v]) => v),
      ['1', 'SBPS-001', 'テスト明細商品名1', '1', '50', '1000', '', '', '', '2', 'SBPS-002', 'テスト明細商品名2', '1', '100', '2000', '', '', ''],
    );
    const values = pairs.slice(0, -1).map(([, v]) => v);
    assert.equal(hashOf(pairs), sbpsHash('request', values, KEY));
  });

  test('row order changes the hash', () => {
    const swapped = [rows[1], rows[0]].map((r, i) => ({ ...r, dtl_rowno: String(i + 1) }));
    assert.notEqual(hashOf(build({ details: rows })), hashOf(build({ details: swapped })));
  });

  test('parsing regroups rows by occurrence in posted order, whatever the field order', () => {
    const pairs = build({ details: rows });
    const body = encodeMessage('request', parseMessage(Buffer.from(sjisUrlEncode(pairs))).message, KEY, { shuffle: Math.random });
    const { message } = parseMessage(body);
    assert.deepEqual(message.details.map((r) => [r.dtl_rowno, r.dtl_item_id, r.dtl_item_name]), [
      ['1', 'SBPS-001', 'テスト明細商品名1'],
      ['2', 'SBPS-002', 'テスト明細商品名2'],
    ]);
    assert.equal(verifyMessage('request', body, KEY).valid, true);
  });

  test('a dtl_* name missing altogether is blank; unequal repeats are refused', () => {
    const { message } = parseMessage(Buffer.from('dtl_rowno=1&dtl_item_id=A&dtl_rowno=2&dtl_item_id=B'));
    assert.deepEqual(message.details.map((r) => [r.dtl_rowno, r.dtl_item_id, r.dtl_free1]), [['1', 'A', ''], ['2', 'B', '']]);
    refused(() => parseMessage(Buffer.from('dtl_rowno=1&dtl_item_id=A&dtl_rowno=2')), { field: 'dtl_item_id', code: 'format' });
  });

  test('a single field sent twice is refused rather than guessed', () => {
    refused(() => parseMessage(Buffer.from('amount=1&amount=1000')), { field: 'amount', code: 'format' });
  });

  test('resultEchoesDetails decides whether the result hash covers the rows', () => {
    const message: SbpsMessage = {
      fields: { merchant_id: '19788', service_id: '001', order_id: 'O1', free3: 'F3', request_date: '20240101120000', res_result: 'OK' },
      details: [{ dtl_rowno: '1', dtl_item_id: 'X', dtl_item_name: '', dtl_item_count: '1', dtl_tax: '', dtl_amount: '10', dtl_free1: '', dtl_free2: '', dtl_free3: '' }],
    };
    assert.deepEqual(orderedValues('result', message).slice(20, 24), ['', '', 'F3', '20240101120000']);
    assert.deepEqual(orderedValues('result', message, { resultEchoesDetails: true }).slice(22, 25), ['F3', '1', 'X']);
    const echoed = encodeMessage('result', message, KEY, { resultEchoesDetails: true });
    assert.equal(verifyMessage('result', echoed, KEY, { resultEchoesDetails: true }).valid, true);
    assert.equal(verifyMessage('result', echoed, KEY).valid, false);
    const plain = encodeMessage('result', message, KEY);
    assert.equal(parseMessage(plain).message.details.length, 0, 'rows are not sent when not echoed');
    assert.equal(verifyMessage('result', plain, KEY).valid, true);
  });
});

describe('encodeMessage (what SBPS sends)', () => {
  test('uppercase hash, random order, extra unhashed fields such as TOKEN', () => {
    const message = parseMessage(Buffer.from(sjisUrlEncode(build().slice(0, -1)))).message;
    const returnMsg: SbpsMessage = { fields: { ...message.fields, res_result: 'OK', TOKEN: 'tok123' }, details: [] };
    const body = encodeMessage('return', returnMsg, KEY, { shuffle: Math.random, uppercaseHash: true });
    const parsed = parseMessage(body);
    assert.match(parsed.hash, /^[0-9A-F]{40}$/);
    assert.equal(parsed.message.fields.TOKEN, 'tok123');
    const result = verifyMessage('return', body, KEY);
    assert.equal(result.valid, true);
    assert.deepEqual(result.unhashed.sort(), ['TOKEN', 'cancel_url', 'error_url', 'free_csv', 'pagecon_url', 'success_url']);
  });

  test('the fields read the same whatever order they came in; a field named like a prototype key stays a field', () => {
    const message = parseMessage(Buffer.from(sjisUrlEncode(build().slice(0, -1)))).message;
    const withExtras: SbpsMessage = { fields: { ...message.fields, res_result: 'OK', TOKEN: 'tok123' }, details: [] };
    Object.defineProperty(withExtras.fields, '__proto__', { value: 'x', enumerable: true });
    const a = parseMessage(encodeMessage('return', withExtras, KEY, { shuffle: Math.random })).message.fields;
    const b = parseMessage(encodeMessage('return', withExtras, KEY, { shuffle: Math.random })).message.fields;
    // SBPS's own fields in definition order; names it does not define follow in arrival order.
    const own = (fields: Record<string, string>) => Object.entries(fields).filter(([name]) => name !== 'TOKEN' && name !== '__proto__');
    assert.deepEqual(own(a), own(b));
    assert.deepEqual(Object.keys(a).slice(-2).sort(), ['TOKEN', '__proto__']);
    assert.equal(Object.getPrototypeOf(a), Object.prototype);
    assert.equal(Object.getOwnPropertyDescriptor(a, '__proto__')?.value, 'x');
    assert.equal(a.TOKEN, 'tok123');
    assert.equal(verifyMessage('return', encodeMessage('return', withExtras, KEY, { shuffle: Math.random }), KEY).valid, true);
  });
});

describe('properties', () => {
  const itemName = REQUEST_FIELDS.find((s): s is FieldDef => s !== 'details' && s.name === 'item_name') as FieldDef;
  const roomy = { item_name: 400, free1: 400 };

  // Ordinary text mixed with every kind of trouble: offenders, extensions, non-BMP, controls, half-width kana.
  const tricky = ['〜', '～', '−', '－', '‖', '∥', '¢', '￠', '—', '―', '–', '¥', '￥', '\\', '~', '①', '㈱', 'Ⅰ', '髙', '∵', '∟', '𠮷', '😀', '\u0000', '\t', '\u3000', 'ヴ', 'ヷ', '゛', '・', '﨑'];
  const code = (min: number, max: number): fc.Arbitrary<string> => fc.integer({ min, max }).map((c) => String.fromCharCode(c));
  const char = fc.oneof(
    { arbitrary: fc.constantFrom(...'abcXYZ019 *-_@.'), weight: 4 },
    { arbitrary: code(0x3041, 0x30fe), weight: 5 },
    { arbitrary: code(0x4e00, 0x9fa0), weight: 5 },
    { arbitrary: code(0x20, 0x7e), weight: 1 },
    { arbitrary: code(0xff01, 0xff9f), weight: 2 },
    { arbitrary: fc.constantFrom(...tricky), weight: 2 },
  );
  const text = fc.array(char, { maxLength: 16 }).map((cs) => cs.join(''));

  test('whatever the validator accepts in an M field survives Shift_JIS unchanged', () => {
    let accepted = 0;
    fc.assert(
      fc.property(text, (s) => {
        if (checkField(itemName, s, roomy) !== undefined) return;
        accepted++;
        assert.equal(decodeSjis(encodeSjis(s)), s);
      }),
      { numRuns: 2000 },
    );
    assert.ok(accepted > 100, `only ${accepted} accepted strings: the property was barely exercised`);
  });

  test('the hash the sender computes equals the hash the receiver computes from the wire', () => {
    let accepted = 0;
    fc.assert(
      fc.property(text, text, fc.boolean(), fc.integer(), (name, free, normalise, seed) => {
        let pairs: [string, string][];
        try {
          pairs = buildPurchaseRequest({ ...BASE, item_name: name === '' ? 'x' : name, free1: free }, { hashKey: KEY, normalise, limits: roomy });
        } catch (error) {
          if (error instanceof SbpsFieldError) return;
          throw error;
        }
        accepted++;
        const sent = hashOf(pairs);
        // The browser posts the form as it is.
        const posted = Buffer.from(sjisUrlEncode(pairs), 'latin1');
        const asPosted = verifyMessage('request', posted, KEY);
        assert.equal(asPosted.valid, true);
        assert.equal(asPosted.expected, sent);
        // Re-encoded the way SBPS sends messages: random order, uppercase hash.
        let state = seed;
        const random = (): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 4294967296);
        const body = encodeMessage('request', asPosted.message, KEY, { shuffle: random, uppercaseHash: true });
        const { message, hash } = parseMessage(body);
        assert.equal(sbpsHash('request', orderedValues('request', message), KEY), sent);
        assert.equal(hash, sent?.toUpperCase());
      }),
      { numRuns: 2500 },
    );
    assert.ok(accepted > 100, `only ${accepted} accepted requests: the property was barely exercised`);
  });
});
