document.getElementById('handoff')?.submit();
