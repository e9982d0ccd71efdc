import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkJisX0208,
  decodeSjis,
  encodeSjis,
  normaliseCommonOffenders,
  parseSjisUrlEncoded,
  SjisError,
  sjisByteLength,
  sjisUrlEncode,
  toFullWidthKatakana,
  truncateSjis,
} from '../../src/gateways/common/sjis.js';

describe('encodeSjis never writes a silent "?"', () => {
  test('Japanese text encodes to CP932 bytes and decodes back', () => {
    const bytes = encodeSjis('継続課金～');
    assert.equal(bytes.toString('hex'), '8c7091b189db8be08160');
    assert.equal(decodeSjis(bytes), '継続課金～');
  });

  for (const [text, char, position] of [
    ['10〜20', '〜', 3],
    ['a−b', '−', 2],
    ['𠮷野家', '𠮷', 1],
    ['xy😀', '😀', 3],
    ['¥100', '¥', 1],
    ['ヷ', 'ヷ', 1],
  ] as const) {
    test(`${JSON.stringify(text)} is refused at ${JSON.stringify(char)}, position ${position} in code points`, () => {
      assert.throws(
        () => encodeSjis(text, 'item_name'),
        (error: unknown) =>
          error instanceof SjisError && error.char === char && error.position === position && error.field === 'item_name' &&
          error.message.startsWith(`item_name: "${char}" at position ${position}`),
      );
    });
  }

  test('a literal "?" is still fine', () => {
    assert.equal(encodeSjis('?').toString('hex'), '3f');
  });

  test('the JIS wave dash is named with its CP932 form as the fix', () => {
    assert.throws(() => encodeSjis('〜'), /U\+FF5E/);
  });
});

describe('byte lengths count Shift_JIS bytes', () => {
  test('ASCII and half-width katakana take 1 byte, everything else 2', () => {
    assert.equal(sjisByteLength('abc'), 3);
    assert.equal(sjisByteLength('テスト'), 6);
    assert.equal(sjisByteLength('ｶﾞ'), 2);
    assert.equal(sjisByteLength('CD（初回盤）'), 12);
    assert.throws(() => sjisByteLength('〜'), SjisError);
  });

  test('truncation never cuts a double-byte character in half', () => {
    assert.equal(truncateSjis('テスト商品', 5), 'テス');
    assert.equal(truncateSjis('aテスト', 4), 'aテ');
    assert.equal(truncateSjis('abc', 10), 'abc');
  });
});

describe('checkJisX0208', () => {
  test('accepts ASCII, kana, level 1 and 2 kanji, row-2 symbols and row 84', () => {
    for (const s of ['Item ID', 'ひらがなカタカナ', '漢字 鴎', '∵≒√', '堯槇遙瑤凜熙', 'ＡＢＣ１２３', '']) {
      assert.deepEqual(checkJisX0208(s), { ok: true }, s);
    }
  });

  for (const [text, char, position, reason] of [
    ['ab①', '①', 3, /platform-dependent/],
    ['㈱ケッサイ', '㈱', 1, /platform-dependent/],
    ['第Ⅰ部', 'Ⅰ', 2, /platform-dependent/],
    ['髙橋', '髙', 1, /platform-dependent.*IBM/],
    ['∟', '∟', 1, /platform-dependent/],
    ['𠮷田', '𠮷', 1, /Basic Multilingual Plane/],
    ['ab𠮷①', '𠮷', 3, /Basic Multilingual Plane/],
    ['〜', '〜', 1, /CP932/],
    ['ｶﾀｶﾅ', 'ｶ', 1, /half-width katakana/],
    ['a\tb', '\t', 2, /control/],
    ['\u0080', '\u0080', 1, /control/],
  ] as const) {
    test(`refuses ${JSON.stringify(char)} in ${JSON.stringify(text)}`, () => {
      const result = checkJisX0208(text);
      assert.equal(result.ok, false);
      if (result.ok) return;
      assert.equal(result.char, char);
      assert.equal(result.position, position);
      assert.match(result.reason, reason);
    });
  }
});

describe('toFullWidthKatakana', () => {
  test('combines dakuten and handakuten into one character', () => {
    assert.equal(toFullWidthKatakana('ｶﾞｲﾄﾞﾌﾞｯｸ'), 'ガイドブック');
    assert.equal(toFullWidthKatakana('ﾊﾟﾋﾟﾌﾟﾍﾟﾎﾟ'), 'パピプペポ');
    assert.equal(toFullWidthKatakana('ｳﾞｧｲｵﾘﾝ'), 'ヴァイオリン');
    assert.equal(toFullWidthKatakana('ﾂﾞﾃﾞﾄﾞ'), 'ヅデド');
  });

  test('punctuation and the long vowel mark', () => {
    assert.equal(toFullWidthKatakana('｢ｺｰﾋｰ･ﾃｨｰ｣､｡'), '「コーヒー・ティー」、。');
  });

  test('marks that cannot combine stay separate, and only combinations in JIS X 0208 are formed', () => {
    assert.equal(toFullWidthKatakana('ﾜﾞ'), 'ワ゛');
    assert.equal(toFullWidthKatakana('ｱﾟ'), 'ア゜');
    assert.equal(toFullWidthKatakana('ﾞﾟ'), '゛゜');
    assert.equal(toFullWidthKatakana('ｶﾞﾞ'), 'ガ゛');
    assert.ok(checkJisX0208(toFullWidthKatakana('ﾜﾞｦﾞｳﾞ')).ok, 'checkJisX0208(toFullWidthKatakana(\'ﾜﾞｦﾞｳﾞ\')).ok');
  });

  test('leaves everything else alone', () => {
    assert.equal(toFullWidthKatakana('ABC ガ ｶ'), 'ABC ガ カ');
  });
});

describe('normaliseCommonOffenders', () => {
  test('maps each JIS/Mac form to the CP932 form of the same bytes', () => {
    const cases: [string, string][] = [
      ['\u301C', '\uFF5E'],
      ['\u2212', '\uFF0D'],
      ['\u2016', '\u2225'],
      ['\u00A2', '\uFFE0'],
      ['\u00A3', '\uFFE1'],
      ['\u00AC', '\uFFE2'],
      ['\u2014', '\u2015'],
      ['\u2013', '\u2015'],
      ['\u00A5', '\uFFE5'],
    ];
    for (const [from, to] of cases) {
      assert.equal(normaliseCommonOffenders(from), to);
      assert.throws(() => encodeSjis(from), SjisError);
      assert.equal(decodeSjis(encodeSjis(to)), to);
    }
  });

  test('leaves ordinary text untouched', () => {
    assert.equal(normaliseCommonOffenders('テスト商品 ABC-1'), 'テスト商品 ABC-1');
  });
});

describe('Shift_JIS urlencoded forms', () => {
  test('encodes as a Shift_JIS browser posts: %XX of the bytes, + for space', () => {
    assert.equal(
      sjisUrlEncode([['item_name', '継続課金'], ['item_id', 'Item ID'], ['url', 'https://x/?a=1&b=2']]),
      'item_name=%8Cp%91%B1%89%DB%8B%E0&item_id=Item+ID&url=https%3A%2F%2Fx%2F%3Fa%3D1%26b%3D2',
    );
  });

  test('refuses a value with no Shift_JIS form, naming the field', () => {
    assert.throws(() => sjisUrlEncode([['free1', '〜']]), (e: unknown) => e instanceof SjisError && e.field === 'free1');
  });

  test('decodes bytes before characters, keeping repeats and order', () => {
    const body = Buffer.from('item_name=%8Cp%91%B1%89%DB%8B%E0&item_id=Item+ID&plus=%2B&dtl_rowno=1&dtl_rowno=2&empty=&bare&&stray=100%');
    assert.deepEqual(parseSjisUrlEncoded(body), [
      ['item_name', '継続課金'],
      ['item_id', 'Item ID'],
      ['plus', '+'],
      ['dtl_rowno', '1'],
      ['dtl_rowno', '2'],
      ['empty', ''],
      ['bare', ''],
      ['stray', '100%'],
    ]);
  });

  test('raw (unescaped) Shift_JIS bytes decode too', () => {
    const body = Buffer.concat([Buffer.from('item_name='), encodeSjis('ソ表'), Buffer.from('&a=b')]);
    assert.deepEqual(parseSjisUrlEncoded(body), [['item_name', 'ソ表'], ['a', 'b']]);
  });

  test('encode then parse is the identity for representable text', () => {
    const pairs: [string, string][] = [['a', 'テスト ～ ー＋'], ['b', ''], ['a', '50% & more=yes']];
    assert.deepEqual(parseSjisUrlEncoded(Buffer.from(sjisUrlEncode(pairs))), pairs);
  });
});
