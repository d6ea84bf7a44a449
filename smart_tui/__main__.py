from smart_tui.cli import main

raise SystemExit(main())
