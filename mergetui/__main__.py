from mergetui.cli import main

raise SystemExit(main())
