from models.compare_intents.run import main

raise SystemExit(main())
