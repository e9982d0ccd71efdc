// Fills the address from the postcode (GET /api/address). Without JavaScript the fields are simply
// typed by hand; with it, they stay editable and an unknown postcode only shows a note.
(function () {
  var form = document.querySelector('form[data-postcode]');
  if (!form) return;
  var input = form.querySelector('input[name=postcode]');
  var note = form.querySelector('.postcode-note');
  var fields = { prefecture: 'prefecture', city: 'city', line1: 'town' };
  var last = '';
  input.addEventListener('input', function () {
    var digits = input.value.normalize('NFKC').replace(/[^0-9]/g, '');
    if (digits.length !== 7 || digits === last) return;
    last = digits;
    note.textContent = '検索中… / Looking up…';
    fetch('/api/address?postcode=' + digits, { headers: { accept: 'application/json' } })
      .then(function (res) {
        return res.json().then(function (body) { return { ok: res.ok, body: body }; });
      })
      .then(function (r) {
        if (digits !== last) return;
        if (!r.ok) {
          note.textContent = r.body.error ? r.body.error.message : '住所を入力してください / Please enter the address.';
          return;
        }
        Object.keys(fields).forEach(function (name) {
          var el = form.querySelector('input[name=' + name + ']');
          if (el) el.value = r.body.address[fields[name]] || '';
        });
        note.textContent = '';
        var line1 = form.querySelector('input[name=line1]');
        if (line1) line1.focus();
      })
      .catch(function () {
        note.textContent = '住所を入力してください / Please enter the address.';
      });
  });
})();
