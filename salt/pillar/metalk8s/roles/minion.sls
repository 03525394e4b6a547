metalk8s:
  roles:
    minion: true
