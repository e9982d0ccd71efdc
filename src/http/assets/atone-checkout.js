// Runs atone's modal for the order and tells the store what the modal said; the store reads the
// transaction back from atone before anything changes. Without JavaScript atone cannot be used
// (the order page offers the other payment methods).
(function () {
  var config = JSON.parse(document.getElementById('atone-config').textContent);
  var status = document.getElementById('atone-status');
  var errorBox = document.getElementById('atone-error');
  var button = document.getElementById('atone-open');

  function show(message, isError) {
    if (isError) {
      errorBox.textContent = message;
      errorBox.hidden = false;
      status.textContent = '';
    } else {
      status.textContent = message;
    }
  }
  function post(body) {
    return fetch(config.callbackUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).then(function (res) {
      return res.json();
    });
  }
  function toOrder() {
    location.href = config.orderUrl;
  }

  if (!window.Atone) {
    show('atone を読み込めませんでした。別のお支払い方法をお選びください / atone could not be loaded; please choose another way to pay.', true);
    return;
  }
  window.Atone.config({
    pub_key: config.pub_key,
    payment: config.payment,
    pre_token: config.pre_token,
    authenticated: function (token, userNo) {
      post({ event: 'authenticated', authenticationToken: token, userNo: userNo ? String(userNo) : null });
    },
    succeeded: function (response) {
      show('お支払いを確認しています… / Confirming your payment…');
      post({ event: 'succeeded', transactionId: response.id }).then(toOrder, toOrder);
    },
    failed: function (response) {
      show('atone でのお支払いが承認されませんでした。別のお支払い方法をお選びください / atone did not approve the payment; please choose another way to pay.', true);
      post({ event: 'failed', transactionId: response.id }).then(toOrder, toOrder);
    },
    cancelled: function () {
      show('atone の画面が閉じられました / The atone window was closed.');
    },
    error: function (name, message) {
      show('atone: ' + (message || name) + ' — 別のお支払い方法をお選びください / please choose another way to pay.', true);
      setTimeout(toOrder, 4000);
    },
  });
  button.addEventListener('click', function () {
    errorBox.hidden = true;
    window.Atone.start();
  });
  window.Atone.start();
})();
