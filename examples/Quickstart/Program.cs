System.Console.WriteLine("Quickstart: coming with the ORPO issues.");
